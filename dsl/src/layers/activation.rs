//! Elementwise activations: `Relu`, `LeakyRelu(negative_slope)`, `Sigmoid`, `Tanh`,
//! `Gelu`. Any shape; the output has the input's.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::onnx::{activation_nodes, reshape_input, temp, value_node, StepShapes};
use super::{arg, layer, size, ArgKind, Call, Checked, GradFlow, LayerSpec, Op, Step};
use crate::check::{Checker, Layer};
use crate::codegen::Plan;

pub const SPECS: &[LayerSpec] = &[
    layer("Relu", &[], "`Relu`", check),
    layer(
        "LeakyRelu",
        &[arg("negative_slope", ArgKind::Float, false)],
        "`LeakyRelu` or `LeakyRelu(0.2)`",
        check,
    ),
    layer("Sigmoid", &[], "`Sigmoid`", check),
    layer("Tanh", &[], "`Tanh`", check),
    layer("Gelu", &[], "`Gelu`", check),
];

/// Elementwise activations.
#[derive(Clone, Copy, PartialEq)]
pub enum Act {
    Relu,
    LeakyRelu(f64),
    Sigmoid,
    Tanh,
    Gelu,
}

impl Act {
    /// Whether the derivative is a function of the output, so the activation can be
    /// fused into a preceding dense layer (mirrors the runtime's `Activation::fusable`).
    pub fn fusable(self) -> bool {
        match self {
            Act::Relu | Act::Sigmoid | Act::Tanh => true,
            Act::LeakyRelu(slope) => slope >= 0.0,
            Act::Gelu => false,
        }
    }
}

/// The runtime's `Activation` for an optional fused activation (`Identity` if none).
pub fn activation(act: Option<Act>) -> TokenStream {
    let path = quote!(::kiln::__private::layers::Activation);
    match act {
        None => quote!(#path::Identity),
        Some(Act::Relu) => quote!(#path::Relu),
        Some(Act::LeakyRelu(slope)) => {
            let slope = Literal::f64_suffixed(slope);
            quote!(#path::LeakyRelu(#slope))
        }
        Some(Act::Sigmoid) => quote!(#path::Sigmoid),
        Some(Act::Tanh) => quote!(#path::Tanh),
        Some(Act::Gelu) => quote!(#path::Gelu),
    }
}

fn check(_: &mut Checker, call: &Call) -> Option<Checked> {
    let act = match call.spec.name {
        "Relu" => Act::Relu,
        "LeakyRelu" => Act::LeakyRelu(call.float(0, 0.01)),
        "Sigmoid" => Act::Sigmoid,
        "Tanh" => Act::Tanh,
        _ => Act::Gelu,
    };
    let input = call.input.clone()?;
    Some((Box::new(Activation(act)), input))
}

struct Activation(Act);

impl Op for Activation {
    fn flops(&self, layer: &Layer) -> u64 {
        size(&layer.output) as u64
    }

    fn fusable_activation(&self) -> Option<Act> {
        self.0.fusable().then_some(self.0)
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let output = plan.node(size(&layer.output));
        plan.push(ActivationStep {
            act: self.0,
            input,
            output,
        });
        output
    }
}

struct ActivationStep {
    act: Act,
    input: usize,
    output: usize,
}

impl Step for ActivationStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn uses_batch(&self) -> bool {
        false
    }

    fn onnx(&self, shapes: &StepShapes) -> Option<Vec<TokenStream>> {
        let mut nodes = vec![reshape_input(self.input, self.output, shapes.input)];
        nodes.extend(activation_nodes(
            self.act,
            temp(self.output, 0),
            value_node(self.output),
            self.output,
            1,
        ));
        Some(nodes)
    }

    fn forward(&self) -> TokenStream {
        let ActivationStep { input, output, .. } = self;
        let act = activation(Some(self.act));
        quote! {
            {
                let io = ws.forward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::activation_forward(#act, io.output, io.input);
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let ActivationStep { input, output, .. } = self;
        let act = activation(Some(self.act));
        let accum = flow.accum_or_replace(*input);
        quote! {
            {
                let io = ws.backward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::activation_backward(#act, io.grad_input, #accum, io.input, io.output, io.grad_output);
            }
        }
    }
}
