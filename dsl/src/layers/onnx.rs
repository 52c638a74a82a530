//! Tokens of the ONNX operators a step exports (`::kiln::__private::onnx`): what each
//! layer becomes is in the runtime's `onnx` module.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::activation::Act;

/// The shapes of the layer a step belongs to, per sample.
pub struct StepShapes<'a> {
    pub input: &'a [usize],
    pub output: &'a [usize],
}

fn path() -> TokenStream {
    quote!(::kiln::__private::onnx)
}

/// An `OnnxNode` expression.
pub fn node(
    op: &str,
    inputs: &[TokenStream],
    output: TokenStream,
    attrs: &[TokenStream],
) -> TokenStream {
    let p = path();
    quote! {
        #p::OnnxNode {
            op: #op,
            inputs: &[#(#inputs),*],
            output: #output,
            attrs: &[#(#attrs),*],
        }
    }
}

pub fn value_node(node: usize) -> TokenStream {
    let p = path();
    quote!(#p::OnnxValue::Node(#node))
}

pub fn temp(node: usize, k: u8) -> TokenStream {
    let p = path();
    quote!(#p::OnnxValue::Temp(#node, #k))
}

pub fn param(offset: usize) -> TokenStream {
    let p = path();
    quote!(#p::OnnxValue::Param(#offset))
}

pub fn buffer(offset: usize) -> TokenStream {
    let p = path();
    quote!(#p::OnnxValue::Buffer(#offset))
}

pub fn scalar(value: f64) -> TokenStream {
    let p = path();
    let value = Literal::f64_suffixed(value);
    quote!(#p::OnnxValue::Scalar(#value))
}

fn sqrt_2() -> TokenStream {
    let p = path();
    quote!(#p::OnnxValue::Scalar(::core::f64::consts::SQRT_2))
}

pub fn ints(values: &[i64]) -> TokenStream {
    let p = path();
    quote!(#p::OnnxValue::Ints(&[#(#values),*]))
}

pub fn attr_int(name: &str, value: i64) -> TokenStream {
    let p = path();
    quote!((#name, #p::OnnxAttr::Int(#value)))
}

pub fn attr_ints(name: &str, values: &[i64]) -> TokenStream {
    let p = path();
    quote!((#name, #p::OnnxAttr::Ints(&[#(#values),*])))
}

pub fn floats(values: &[f32]) -> TokenStream {
    let p = path();
    quote!(#p::OnnxValue::Floats(&[#(#values),*]))
}

pub fn absent() -> TokenStream {
    let p = path();
    quote!(#p::OnnxValue::Absent)
}

pub fn attr_str(name: &str, value: &str) -> TokenStream {
    let p = path();
    quote!((#name, #p::OnnxAttr::Str(#value)))
}

pub fn attr_float(name: &str, value: f64) -> TokenStream {
    let p = path();
    let value = Literal::f32_suffixed(value as f32);
    quote!((#name, #p::OnnxAttr::Float(#value)))
}

/// `Reshape(node, [-1, dims…])` into `Temp(output, 0)`: every step reads its input
/// in its layer's shape, whatever rank the operator before left (a `Flatten` layer
/// has no operator of its own).
pub fn reshape_input(input: usize, output: usize, dims: &[usize]) -> TokenStream {
    let shape: Vec<i64> = std::iter::once(-1)
        .chain(dims.iter().map(|&d| d as i64))
        .collect();
    node(
        "Reshape",
        &[value_node(input), ints(&shape)],
        temp(output, 0),
        &[],
    )
}

/// The operators of an activation from `input` into `output`, with temporaries
/// `Temp(node, first..)`.
pub fn activation_nodes(
    act: Act,
    input: TokenStream,
    output: TokenStream,
    node_id: usize,
    first: u8,
) -> Vec<TokenStream> {
    match act {
        Act::Relu => vec![node("Relu", &[input], output, &[])],
        Act::Sigmoid => vec![node("Sigmoid", &[input], output, &[])],
        Act::Tanh => vec![node("Tanh", &[input], output, &[])],
        Act::LeakyRelu(slope) => vec![node(
            "LeakyRelu",
            &[input],
            output,
            &[attr_float("alpha", slope)],
        )],
        Act::Gelu => {
            let (a, b, c, d) = (
                temp(node_id, first),
                temp(node_id, first + 1),
                temp(node_id, first + 2),
                temp(node_id, first + 3),
            );
            vec![
                node(
                    "Div",
                    // The constant's path, not its digits (which clippy would flag
                    // in the user's crate).
                    &[input.clone(), sqrt_2()],
                    a.clone(),
                    &[],
                ),
                node("Erf", &[a], b.clone(), &[]),
                node("Add", &[b, scalar(1.0)], c.clone(), &[]),
                node("Mul", &[input, c], d.clone(), &[]),
                node("Mul", &[d, scalar(0.5)], output, &[]),
            ]
        }
    }
}

/// An operator into `output` with an optional fused activation after it: the
/// operator writes `Temp(output, at)` when an activation follows, and the activation's
/// own temporaries come after it (`at` is past those the step has used already).
pub fn with_activation(
    op: impl FnOnce(TokenStream) -> TokenStream,
    act: Option<Act>,
    output: usize,
    at: u8,
) -> Vec<TokenStream> {
    match act {
        None => vec![op(value_node(output))],
        Some(act) => {
            let mut nodes = vec![op(temp(output, at))];
            nodes.extend(activation_nodes(
                act,
                temp(output, at),
                value_node(output),
                output,
                at + 1,
            ));
            nodes
        }
    }
}
