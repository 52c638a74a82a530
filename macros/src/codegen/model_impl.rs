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
    let table = param_table(plan);
    quote! {
        #table

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

/// `<Type as Layer>` of each user layer in `layers` and the blocks in them.
fn custom_layers(layers: &[Layer]) -> Vec<TokenStream> {
    flat_layers(layers)
        .into_iter()
        .filter_map(|(layer, _)| layer.op.custom_layer())
        .collect()
}

/// The layer's parameter count: the counted ones, plus the user layers' in it.
fn layer_params(layer: &Layer) -> TokenStream {
    let counted = layer.op.params(layer);
    let customs = custom_layers(std::slice::from_ref(layer));
    quote!(#counted #(+ ::kiln::__private::total_len(#customs::PARAMS))*)
}

fn layer_flops(layer: &Layer) -> TokenStream {
    let counted = layer.op.flops(layer);
    let customs = custom_layers(std::slice::from_ref(layer));
    quote!(#counted #(+ #customs::FLOPS)*)
}

/// The model's forward FLOPs per sample, user layers' included.
pub fn flops_per_sample(checked: &Checked) -> TokenStream {
    let counted: u64 = flat_layers(&checked.layers)
        .into_iter()
        .map(|(layer, _)| layer.op.flops(layer))
        .sum();
    let customs = custom_layers(&checked.layers);
    quote!(#counted #(+ #customs::FLOPS)*)
}

/// The model's parameter count, user layers' included.
pub fn param_count(plan: &Plan) -> TokenStream {
    if plan.customs.is_empty() {
        let count = plan.param_count();
        quote!(#count)
    } else {
        let last = plan.customs.len();
        quote!(__KILN_PARAM_AT[#last])
    }
}

/// The `ParamInfo` rows of counted tensors.
fn tensor_rows(tensors: &[super::ParamPlan]) -> Vec<TokenStream> {
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
                    scope: "",
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
}

/// For a model with user layers: its parameter table, the counted rows and then each
/// user layer's declared tensors, named under the layer.
fn param_table(plan: &Plan) -> TokenStream {
    if plan.customs.is_empty() {
        return TokenStream::new();
    }
    let counted = tensor_rows(&plan.params);
    let rows = counted.len();
    let layers: Vec<&TokenStream> = plan.customs.iter().map(|c| &c.layer).collect();
    let pushes = plan.customs.iter().enumerate().map(|(k, c)| {
        let (layer, scope) = (&c.layer, &c.scope);
        quote! {
            let at = ::kiln::__private::push_decls(&mut table, at, __KILN_PARAM_AT[#k], #scope, #layer::PARAMS);
        }
    });
    quote! {
        const __KILN_PARAM_ROWS: ::core::primitive::usize = #rows #(+ #layers::PARAMS.len())*;
        const __KILN_PARAM_TABLE: [::kiln::__private::ParamInfo; __KILN_PARAM_ROWS] = {
            let mut table = [::kiln::__private::EMPTY_PARAM; __KILN_PARAM_ROWS];
            let at = ::kiln::__private::copy_rows(&mut table, 0, &[#(#counted),*]);
            #(#pushes)*
            ::core::assert!(at == __KILN_PARAM_ROWS);
            table
        };
    }
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
    let table = tensor_rows;

    let counted = table(&plan.params);
    let params = if plan.customs.is_empty() {
        quote!(&[#(#counted),*])
    } else {
        quote!(&__KILN_PARAM_TABLE)
    };
    let buffers = table(&plan.buffers);
    let buffer_count = plan.buffer_count();
    let fixed = plan.fixed;
    let param_count = param_count(plan);
    let flops = flops_per_sample(checked);
    let mut nodes: Vec<TokenStream> = plan.node_offsets().iter().map(|n| quote!(#n)).collect();
    // The user layers' saved scratch, after every counted node.
    for custom in &plan.customs {
        let layer = &custom.layer;
        let last = nodes.last().expect("the total").clone();
        nodes.push(quote!(#last + #layer::SAVED));
    }
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
            params: #params,
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
