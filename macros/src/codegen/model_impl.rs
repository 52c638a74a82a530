//! The `Model` impl: associated shapes, the compile-time tables and the two passes.

use proc_macro2::TokenStream;
use quote::quote;

use super::{passes, Plan};
use crate::check::{Checked, Layer, Op};
use crate::parse::ModelDef;

pub fn emit(def: &ModelDef, checked: &Checked, plan: &Plan) -> TokenStream {
    let name = &def.name;
    let input_shape = shape_type(&checked.input);
    let output_shape = shape_type(&checked.output);
    let spec = spec(def, checked, plan);
    let forward = passes::forward(plan);
    let backward = passes::backward(plan);
    quote! {
        #[automatically_derived]
        impl<T: ::kiln::__private::Float> ::kiln::__private::Model<T> for #name<T> {
            type Input = #input_shape;
            type Output = #output_shape;
            const SPEC: &'static ::kiln::__private::ModelSpec = &#spec;

            fn state(&self) -> &::kiln::__private::ModelState<T> {
                &self.state
            }

            fn state_mut(&mut self) -> &mut ::kiln::__private::ModelState<T> {
                &mut self.state
            }

            fn from_state(state: ::kiln::__private::ModelState<T>) -> Self {
                Self { state }
            }

            #forward

            #backward
        }
    }
}

/// `::kiln::__private::Shape2<A, B>` for `[A, B]`.
fn shape_type(dims: &[usize]) -> TokenStream {
    let ty = quote::format_ident!("Shape{}", dims.len());
    quote!(::kiln::__private::#ty<#(#dims),*>)
}

fn flat_layers(layers: &[Layer]) -> Vec<&Layer> {
    let mut out = Vec::new();
    for layer in layers {
        if let Op::Residual(inner) = &layer.op {
            out.extend(flat_layers(inner));
        }
        out.push(layer);
    }
    out
}

fn layer_params(layer: &Layer) -> usize {
    match layer.op {
        Op::Dense { units, bias } => {
            let in_features = *layer.input.last().expect("rank >= 1");
            units * in_features + if bias { units } else { 0 }
        }
        _ => 0,
    }
}

/// Forward FLOPs per sample of one layer: 2 per multiply-add in a product, one per
/// bias addition and per element of an elementwise layer, three per softmax element.
fn layer_flops(layer: &Layer) -> u64 {
    let out: usize = layer.output.iter().product();
    let flops = match layer.op {
        Op::Dense { units, bias } => {
            let in_features = *layer.input.last().expect("rank >= 1");
            let rows = out / units;
            rows * (2 * in_features * units + if bias { units } else { 0 })
        }
        Op::Activation(_) | Op::Dropout(_) | Op::Residual(_) => out,
        Op::Softmax | Op::LogSoftmax => 3 * out,
        Op::Flatten => 0,
    };
    flops as u64
}

pub fn flops_per_sample(checked: &Checked) -> u64 {
    flat_layers(&checked.layers)
        .into_iter()
        .map(layer_flops)
        .sum()
}

fn spec(def: &ModelDef, checked: &Checked, plan: &Plan) -> TokenStream {
    let model_name = def.name.to_string();
    let input = &checked.input;
    let output = &checked.output;
    let layers = flat_layers(&checked.layers).into_iter().map(|layer| {
        let name = &layer.name;
        let kind = &layer.display;
        let shape = &layer.output;
        let params = layer_params(layer);
        let flops = layer_flops(layer);
        quote! {
            ::kiln::__private::LayerInfo {
                name: #name,
                kind: #kind,
                output: &[#(#shape),*],
                params: #params,
                flops: #flops,
            }
        }
    });
    let params = plan.params.iter().map(|p| {
        let name = &p.name;
        let shape = &p.shape;
        let offset = p.range.start;
        let len = p.range.len();
        let fan_in = p.fan_in;
        let regularized = p.regularized;
        quote! {
            ::kiln::__private::ParamInfo {
                name: #name,
                shape: &[#(#shape),*],
                offset: #offset,
                len: #len,
                init: ::kiln::__private::Init::FanInUniform { fan_in: #fan_in },
                regularized: #regularized,
            }
        }
    });
    let param_count = plan.param_count();
    let flops = flops_per_sample(checked);
    let nodes = plan.node_offsets();
    let output_node = plan.output_node;
    quote! {
        ::kiln::__private::ModelSpec {
            name: #model_name,
            input: &[#(#input),*],
            output: &[#(#output),*],
            layers: &[#(#layers),*],
            params: &[#(#params),*],
            param_count: #param_count,
            flops_per_sample: #flops,
            nodes: &[#(#nodes),*],
            output_node: #output_node,
        }
    }
}
