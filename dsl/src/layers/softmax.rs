//! `Softmax` and `LogSoftmax` over the last axis.

use proc_macro2::TokenStream;
use quote::quote;

use super::activation::Act;
use super::onnx::{attr_int, node, reshape_input, temp, value_node, StepShapes};
use super::{layer, size, Call, Checked, GradFlow, LayerSpec, Op, Step};
use crate::check::{Checker, Layer};
use crate::codegen::Plan;

pub const SPECS: &[LayerSpec] = &[
    layer("Softmax", &[], "`Softmax`", check),
    layer("LogSoftmax", &[], "`LogSoftmax`", check),
];

struct Softmax {
    log: bool,
}

fn check(_: &mut Checker, call: &Call) -> Option<Checked> {
    let log = call.spec.name == "LogSoftmax";
    let input = call.input.clone()?;
    Some((Box::new(Softmax { log }), input))
}

impl Op for Softmax {
    fn flops(&self, layer: &Layer) -> u64 {
        3 * size(&layer.output) as u64
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let output = plan.node(size(&layer.output));
        plan.push(SoftmaxStep {
            log: self.log,
            width: *layer.output.last().expect("rank >= 1"),
            input,
            output,
        });
        output
    }
}

struct SoftmaxStep {
    log: bool,
    width: usize,
    input: usize,
    output: usize,
}

impl Step for SoftmaxStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn uses_batch(&self) -> bool {
        false
    }

    fn onnx(&self, _: &StepShapes) -> Option<Vec<TokenStream>> {
        let op = if self.log { "LogSoftmax" } else { "Softmax" };
        Some(vec![
            reshape_input(self.input, self.output, &[self.width]),
            node(
                op,
                &[temp(self.output, 0)],
                value_node(self.output),
                &[attr_int("axis", -1)],
            ),
        ])
    }

    fn forward(&self) -> TokenStream {
        let SoftmaxStep {
            width,
            input,
            output,
            ..
        } = self;
        let kernel = if self.log {
            quote!(log_softmax_forward)
        } else {
            quote!(softmax_forward)
        };
        quote! {
            {
                let io = ws.forward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::#kernel::<T, #width>(io.output, io.input);
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let SoftmaxStep {
            width,
            input,
            output,
            ..
        } = self;
        let kernel = if self.log {
            quote!(log_softmax_backward)
        } else {
            quote!(softmax_backward)
        };
        let accum = flow.accum_or_replace(*input);
        quote! {
            {
                let io = ws.backward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::#kernel::<T, #width>(io.grad_input, #accum, io.output, io.grad_output);
            }
        }
    }
}
