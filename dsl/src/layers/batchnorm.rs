//! `BatchNorm2d(num_features, eps, momentum)` over `[C, H, W]` and `BatchNorm1d(..)`
//! over `[features]` or `[C, L]`: PyTorch's layers, with their `weight`, `bias`,
//! `running_mean`, `running_var` and `num_batches_tracked`. A following activation
//! whose derivative is a function of its output (`Relu` after `BatchNorm2d`, as in
//! every ResNet) is fused into the layer, as after a dense or convolution layer.

use std::ops::Range;

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::activation::activation;
use super::activation::Act;
use super::onnx::{
    attr_float, buffer, node, param, reshape_input, temp, with_activation, StepShapes,
};
use super::{arg, layer, size, slice, ArgKind, Call, Checked, GradFlow, LayerSpec, Op, Step};
use crate::check::{dims, Checker, Layer};
use crate::codegen::{InitPlan, Plan};

const ARGS: &[super::ArgSpec] = &[
    arg("num_features", ArgKind::Int, false),
    arg("eps", ArgKind::Float, false),
    arg("momentum", ArgKind::Float, false),
];

pub const SPECS: &[LayerSpec] = &[
    layer(
        "BatchNorm2d",
        ARGS,
        "`BatchNorm2d` or `BatchNorm2d(16, eps = 1e-5, momentum = 0.1)`",
        check,
    ),
    layer(
        "BatchNorm1d",
        ARGS,
        "`BatchNorm1d` or `BatchNorm1d(128, eps = 1e-5, momentum = 0.1)`",
        check,
    ),
];

struct BatchNorm {
    eps: f64,
    momentum: f64,
}

fn check(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let name = &call.name;
    let eps = call.float(1, 1e-5);
    let momentum = call.float(2, 0.1);
    // Rule: eps is positive and momentum a fraction.
    if eps.is_nan() || eps <= 0.0 {
        checker.push(
            call.arg_span(1),
            format!("{name}: eps must be positive, got {eps:?}"),
        );
        return None;
    }
    if !(0.0..=1.0).contains(&momentum) {
        checker.push(
            call.arg_span(2),
            format!("{name}: momentum must be in [0, 1], got {momentum:?}"),
        );
        return None;
    }
    let input = call.input.as_ref()?;
    // Rule: BatchNorm2d normalises [C, H, W]; BatchNorm1d [features] or [C, L]; an
    // explicit feature count must match the channels.
    let two_d = call.spec.name == "BatchNorm2d";
    let expected = if two_d {
        "[channels, height, width]"
    } else {
        "[features] or [channels, length]"
    };
    if (two_d && input.len() != 3) || (!two_d && input.len() > 2) {
        let hint = checker.vector_hint(input).unwrap_or_default();
        checker.push(
            call.span(),
            format!(
                "{name}: {} expects {expected} but gets {}{hint}",
                call.spec.name,
                dims(input)
            ),
        );
        return None;
    }
    if let Some(count) = call.values[0].as_ref().map(|v| v.int()) {
        if count != input[0] {
            checker.push(
                call.arg_span(0),
                format!(
                    "{name}: channel mismatch: declared {count} channels but the input {} has {}",
                    dims(input),
                    input[0]
                ),
            );
            return None;
        }
    }
    Some((Box::new(BatchNorm { eps, momentum }), input.clone()))
}

impl Op for BatchNorm {
    fn params(&self, layer: &Layer) -> usize {
        2 * layer.input[0]
    }

    fn flops(&self, layer: &Layer) -> u64 {
        2 * size(&layer.output) as u64
    }

    fn takes_activation(&self) -> bool {
        true
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, fused: Option<Act>) -> usize {
        let name = &layer.name;
        let channels = layer.input[0];
        let gamma = plan.param(
            format!("{name}.weight"),
            vec![channels],
            InitPlan::Ones,
            false,
        );
        let beta = plan.param(
            format!("{name}.bias"),
            vec![channels],
            InitPlan::Zeros,
            false,
        );
        let mean = plan.buffer(
            format!("{name}.running_mean"),
            vec![channels],
            InitPlan::Zeros,
            false,
        );
        plan.buffer(
            format!("{name}.running_var"),
            vec![channels],
            InitPlan::Ones,
            false,
        );
        let tracked = plan.buffer(
            format!("{name}.num_batches_tracked"),
            vec![],
            InitPlan::Zeros,
            true,
        );
        let saved = plan.fixed(2 * channels);
        let output = plan.node(size(&layer.output));
        plan.push(BatchNormStep {
            input,
            output,
            channels,
            inner: size(&layer.input) / channels,
            eps: self.eps,
            momentum: self.momentum,
            gamma,
            beta,
            running: mean.start..tracked.end,
            saved,
            fused,
        });
        output
    }
}

struct BatchNormStep {
    input: usize,
    output: usize,
    channels: usize,
    inner: usize,
    eps: f64,
    momentum: f64,
    gamma: Range<usize>,
    beta: Range<usize>,
    running: Range<usize>,
    saved: Range<usize>,
    fused: Option<Act>,
}

impl BatchNormStep {
    fn shape(&self) -> TokenStream {
        let (channels, inner) = (self.channels, self.inner);
        let (eps, momentum) = (
            Literal::f64_suffixed(self.eps),
            Literal::f64_suffixed(self.momentum),
        );
        quote! {
            &::kiln::__private::layers::BatchNormShape {
                channels: #channels,
                inner: #inner,
                eps: #eps,
                momentum: #momentum,
            }
        }
    }
}

impl Step for BatchNormStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn param_ranges(&self) -> Vec<Range<usize>> {
        vec![self.gamma.clone(), self.beta.clone()]
    }

    fn uses_mode(&self) -> Option<bool> {
        Some(false)
    }

    fn uses_buffers(&self) -> bool {
        true
    }

    fn onnx(&self, _: &StepShapes) -> Option<Vec<TokenStream>> {
        let out = self.output;
        let (mean, var) = (self.running.start, self.running.start + self.channels);
        let inputs = [
            temp(out, 0),
            param(self.gamma.start),
            param(self.beta.start),
            buffer(mean),
            buffer(var),
        ];
        let attrs = [
            attr_float("epsilon", self.eps),
            attr_float("momentum", 1.0 - self.momentum),
        ];
        let mut nodes = vec![reshape_input(self.input, out, &[self.channels, self.inner])];
        nodes.extend(with_activation(
            |to| node("BatchNormalization", &inputs, to, &attrs),
            self.fused,
            out,
            1,
        ));
        Some(nodes)
    }

    fn forward(&self) -> TokenStream {
        let BatchNormStep { input, output, .. } = self;
        let (shape, act) = (self.shape(), activation(self.fused));
        let (gamma, beta, running, saved) = (
            slice(&self.gamma),
            slice(&self.beta),
            slice(&self.running),
            slice(&self.saved),
        );
        quote! {
            {
                let io = ws.forward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::batch_norm_forward::<T>(
                    #shape, io.output, &mut io.fixed[#saved], &mut buffers[#running], io.input,
                    &params[#gamma], &params[#beta], #act, mode.training(), batch,
                );
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let BatchNormStep {
            input,
            output,
            channels,
            ..
        } = self;
        let (shape, act) = (self.shape(), activation(self.fused));
        let grad_input = flow.optional(*input, quote!(io.grad_input));
        let both = slice(&(self.gamma.start..self.beta.end));
        let (gamma, saved) = (slice(&self.gamma), slice(&self.saved));
        quote! {
            {
                let io = ws.backward_io(#input, #output, ::core::option::Option::None);
                let (grad_gamma, grad_beta) = grads[#both].split_at_mut(#channels);
                ::kiln::__private::layers::batch_norm_backward::<T>(
                    #shape, #grad_input, grad_gamma, grad_beta, &io.fixed[#saved], io.input,
                    io.output, &params[#gamma], io.grad_output, #act, batch,
                );
            }
        }
    }
}
