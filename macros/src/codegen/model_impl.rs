//! The `Model` impl: associated shapes, the compile-time tables and the two passes.

use proc_macro2::TokenStream;
use quote::quote;

use super::{passes, InitPlan, Plan};
use crate::check::{Checked, Layer};
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

/// Every layer with its nesting depth, a block before the layers inside it.
fn flat_layers(layers: &[Layer]) -> Vec<(&Layer, usize)> {
    fn walk<'a>(layers: &'a [Layer], depth: usize, out: &mut Vec<(&'a Layer, usize)>) {
        for layer in layers {
            out.push((layer, depth));
            walk(layer.op.children(), depth + 1, out);
        }
    }
    let mut out = Vec::new();
    walk(layers, 0, &mut out);
    out
}

fn layer_params(layer: &Layer) -> usize {
    layer.op.params(layer)
}

fn layer_flops(layer: &Layer) -> u64 {
    layer.op.flops(layer)
}

pub fn flops_per_sample(checked: &Checked) -> u64 {
    flat_layers(&checked.layers)
        .into_iter()
        .map(|(layer, _)| layer_flops(layer))
        .sum()
}

fn spec(def: &ModelDef, checked: &Checked, plan: &Plan) -> TokenStream {
    let model_name = def.name.to_string();
    let input = &checked.input;
    let output = &checked.output;
    let layers = flat_layers(&checked.layers)
        .into_iter()
        .map(|(layer, depth)| {
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
                    depth: #depth,
                }
            }
        });
    let table = |tensors: &[super::ParamPlan]| -> Vec<TokenStream> {
        tensors
            .iter()
            .map(|p| {
                let name = &p.name;
                let shape = &p.shape;
                let offset = p.range.start;
                let len = p.range.len();
                let regularized = p.regularized;
                let init = match p.init {
                    InitPlan::FanIn(fan_in) => {
                        quote!(::kiln::__private::Init::FanInUniform { fan_in: #fan_in })
                    }
                    InitPlan::Zeros => quote!(::kiln::__private::Init::Zeros),
                    InitPlan::Ones => quote!(::kiln::__private::Init::Ones),
                    InitPlan::Xavier(fan_in, fan_out) => {
                        quote!(::kiln::__private::Init::XavierUniform { fan_in: #fan_in, fan_out: #fan_out })
                    }
                    InitPlan::Normal(std) => {
                        let std = proc_macro2::Literal::f64_suffixed(std);
                        quote!(::kiln::__private::Init::Normal { std: #std })
                    }
                };
                let kind = if p.count {
                    quote!(::kiln::__private::TensorKind::Count)
                } else {
                    quote!(::kiln::__private::TensorKind::Float)
                };
                quote! {
                    ::kiln::__private::ParamInfo {
                        name: #name,
                        shape: &[#(#shape),*],
                        offset: #offset,
                        len: #len,
                        init: #init,
                        regularized: #regularized,
                        kind: #kind,
                    }
                }
            })
            .collect()
    };
    let params = table(&plan.params);
    let buffers = table(&plan.buffers);
    let buffer_count = plan.buffer_count();
    let fixed = plan.fixed;
    let param_count = plan.param_count();
    let flops = flops_per_sample(checked);
    let nodes = plan.node_offsets();
    let output_node = plan.output_node;
    let token_vocab = match checked.layers.first().and_then(|l| l.op.token_vocab()) {
        Some(vocab) => quote!(::core::option::Option::Some(#vocab)),
        None => quote!(::core::option::Option::None),
    };
    quote! {
        ::kiln::__private::ModelSpec {
            name: #model_name,
            input: &[#(#input),*],
            output: &[#(#output),*],
            layers: &[#(#layers),*],
            params: &[#(#params),*],
            param_count: #param_count,
            buffers: &[#(#buffers),*],
            buffer_count: #buffer_count,
            fixed: #fixed,
            flops_per_sample: #flops,
            nodes: &[#(#nodes),*],
            output_node: #output_node,
            token_vocab: #token_vocab,
        }
    }
}
