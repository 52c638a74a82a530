//! `Dropout(p)`: zeroes each value with probability `p` in training and scales the
//! rest by `1 / (1 - p)`; the identity in inference.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::activation::Act;
use super::onnx::{node, value_node, StepShapes};
use super::{arg, layer, size, ArgKind, Call, Checked, GradFlow, LayerSpec, Op, Step};
use crate::check::{Checker, Layer};
use crate::codegen::Plan;

pub const SPECS: &[LayerSpec] = &[layer(
    "Dropout",
    &[arg("p", ArgKind::Float, true)],
    "`Dropout(0.5)`",
    check,
)];

struct Dropout(f64);

fn check(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let p = call.float(0, 0.0);
    // Rule: a dropout probability is in [0, 1); p = 1 would zero every value.
    if !(0.0..1.0).contains(&p) {
        checker.push(
            call.arg_span(0),
            format!(
                "{}: dropout probability must be in [0, 1), got {p:?}",
                call.name
            ),
        );
        return None;
    }
    let input = call.input.clone()?;
    Some((Box::new(Dropout(p)), input))
}

impl Op for Dropout {
    fn flops(&self, layer: &Layer) -> u64 {
        size(&layer.output) as u64
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let output = plan.node(size(&layer.output));
        let mask = plan.node(size(&layer.output));
        plan.push(DropoutStep {
            p: self.0,
            input,
            output,
            mask,
        });
        output
    }
}

struct DropoutStep {
    p: f64,
    input: usize,
    output: usize,
    mask: usize,
}

impl Step for DropoutStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn uses_batch(&self) -> bool {
        false
    }

    fn uses_mode(&self) -> Option<bool> {
        Some(true)
    }

    fn onnx(&self, _: &StepShapes) -> Option<Vec<TokenStream>> {
        let input = value_node(self.input);
        Some(vec![node(
            "Identity",
            &[input],
            value_node(self.output),
            &[],
        )])
    }

    fn forward(&self) -> TokenStream {
        let DropoutStep {
            input,
            output,
            mask,
            ..
        } = self;
        let p = Literal::f64_suffixed(self.p);
        quote! {
            {
                let shard = ws.shard();
                let io = ws.forward_io(#input, #output, ::core::option::Option::Some(#mask));
                ::kiln::__private::layers::dropout_forward_shard(io.output, io.aux, io.input, #p, mode.rng(), shard);
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let DropoutStep {
            input,
            output,
            mask,
            ..
        } = self;
        let accum = flow.accum_or_replace(*input);
        quote! {
            {
                let io = ws.backward_io(#input, #output, ::core::option::Option::Some(#mask));
                ::kiln::__private::layers::dropout_backward(io.grad_input, #accum, io.aux, io.grad_output);
            }
        }
    }
}
