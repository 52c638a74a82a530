//! The `Model` impl: associated shapes, the compile-time tables and the two passes.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::{passes, InitPlan, Plan};
use crate::check::{Checked, Layer};
use crate::layers::activation::activation;
use crate::layers::onnx::StepShapes;
use crate::layers::DeferredWeight;
use crate::parse::ModelDef;

pub fn emit(def: &ModelDef, checked: &Checked, plan: &Plan) -> TokenStream {
    let name = &def.name;
    let input_shape = shape_type(&checked.input);
    let output_shape = shape_type(&checked.output);
    let spec = spec(def, checked, plan);
    let forward = passes::forward(plan);
    let backward = passes::backward(plan);
    let table = custom_tables(plan);
    let layer = as_layer(def);
    quote! {
        #table

        #[automatically_derived]
        impl<T: ::kiln::__private::Float> ::kiln::__private::Model<T> for #name<T> {
            type Input = #input_shape;
            type Output = #output_shape;
            const SPEC: &'static ::kiln::__private::ModelSpec = &#spec;

            fn state(&self, _: ::kiln::__private::Sealed) -> &::kiln::__private::ModelState<T> {
                &self.state
            }

            fn state_mut(
                &mut self,
                _: ::kiln::__private::Sealed,
            ) -> &mut ::kiln::__private::ModelState<T> {
                &mut self.state
            }

            fn from_state(
                state: ::kiln::__private::ModelState<T>,
                _: ::kiln::__private::Sealed,
            ) -> Self {
                Self { state }
            }

            #forward

            #backward
        }

        #layer
    }
}

/// `impl Layer for the model`: another model uses this one as `name: use Model -> [..]`
/// with the model's tensors nested under `name`, its nodes in the layer's saved scratch
/// (see `kiln::custom`).
fn as_layer(def: &ModelDef) -> TokenStream {
    let name = &def.name;
    let private = quote!(::kiln::__private);
    let f32 = quote!(::core::primitive::f32);
    let model_spec = quote!(<#name<#f32> as #private::Model<#f32>>::SPEC);
    let spec = quote!(__KILN_LAYER_SPEC);
    let message = format!(
        "`{name}` reads token ids, which a model used as a layer cannot check: use it on its own"
    );
    // Spanned on the model's name, which the error then points at.
    let usable = quote::quote_spanned! {name.span()=>
        ::core::assert!(#private::usable_as_layer(#spec), #message);
    };
    quote! {
        const __KILN_LAYER_SPEC: &::kiln::__private::ModelSpec = #model_spec;
        const __KILN_LAYER_PARAM_ROWS: ::core::primitive::usize = #spec.params.len();
        const __KILN_LAYER_PARAM_NAMES: [#private::NameBuf; __KILN_LAYER_PARAM_ROWS] =
            #private::full_names(#spec.params);
        const __KILN_LAYER_PARAMS: [#private::ParamDecl; __KILN_LAYER_PARAM_ROWS] =
            #private::decls_of(#spec.params, &__KILN_LAYER_PARAM_NAMES);
        const __KILN_LAYER_BUFFER_ROWS: ::core::primitive::usize = #spec.buffers.len();
        const __KILN_LAYER_BUFFER_NAMES: [#private::NameBuf; __KILN_LAYER_BUFFER_ROWS] =
            #private::full_names(#spec.buffers);
        const __KILN_LAYER_BUFFERS: [#private::ParamDecl; __KILN_LAYER_BUFFER_ROWS] =
            #private::decls_of(#spec.buffers, &__KILN_LAYER_BUFFER_NAMES);

        #[automatically_derived]
        impl<U: #private::Float> #private::Layer for #name<U> {
            const INPUT: &'static [::core::primitive::usize] = {
                #usable
                #spec.input
            };
            const OUTPUT: &'static [::core::primitive::usize] = #spec.output;
            const PARAMS: &'static [#private::ParamDecl] = &__KILN_LAYER_PARAMS;
            const BUFFERS: &'static [#private::ParamDecl] = &__KILN_LAYER_BUFFERS;
            const SAVED: ::core::primitive::usize = #private::model_saved(#spec);
            const FIXED: ::core::primitive::usize = #spec.fixed;
            const FLOPS: ::core::primitive::u64 = #spec.flops_per_sample;

            fn forward<T: #private::Float>(io: #private::Forward<'_, T>) {
                #private::model_forward::<T, #name<T>>(io)
            }

            fn backward<T: #private::Float>(io: #private::Backward<'_, T>) {
                #private::model_backward::<T, #name<T>>(io)
            }
        }
    }
}

/// `::kiln::__private::Shape2<A, B>` for `[A, B]`.
fn shape_type(dims: &[usize]) -> TokenStream {
    let ty = format_ident!("Shape{}", dims.len());
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

/// For a model with user layers: its parameter and buffer tables, the counted rows
/// and then each user layer's declared tensors, named under the layer.
fn custom_tables(plan: &Plan) -> TokenStream {
    if plan.customs.is_empty() {
        return TokenStream::new();
    }
    let table = |rows_name: &str,
                 table_name: &str,
                 at: &str,
                 counted: &[super::ParamPlan],
                 decls: &str| {
        let (rows_name, table_name) = (
            format_ident!("{}", rows_name),
            format_ident!("{}", table_name),
        );
        let (at, decls) = (format_ident!("{}", at), format_ident!("{}", decls));
        let counted = tensor_rows(counted);
        let rows = counted.len();
        let layers: Vec<&TokenStream> = plan.customs.iter().map(|c| &c.layer).collect();
        let pushes = plan.customs.iter().enumerate().map(|(k, c)| {
            let (layer, scope) = (&c.layer, &c.scope);
            quote! {
                let at = ::kiln::__private::push_decls(&mut table, at, #at[#k], #scope, #layer::#decls);
            }
        });
        quote! {
            const #rows_name: ::core::primitive::usize = #rows #(+ #layers::#decls.len())*;
            const #table_name: [::kiln::__private::ParamInfo; #rows_name] = {
                let mut table = [::kiln::__private::EMPTY_PARAM; #rows_name];
                let at = ::kiln::__private::copy_rows(&mut table, 0, &[#(#counted),*]);
                #(#pushes)*
                ::core::assert!(at == #rows_name);
                table
            };
        }
    };
    let params = table(
        "__KILN_PARAM_ROWS",
        "__KILN_PARAM_TABLE",
        "__KILN_PARAM_AT",
        &plan.params,
        "PARAMS",
    );
    let buffers = table(
        "__KILN_BUFFER_ROWS",
        "__KILN_BUFFER_TABLE",
        "__KILN_BUFFER_AT",
        &plan.buffers,
        "BUFFERS",
    );
    quote!(#params #buffers)
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
    let (buffers, buffer_count, fixed) = if plan.customs.is_empty() {
        let rows = table(&plan.buffers);
        let (count, fixed) = (plan.buffer_count(), plan.fixed);
        (quote!(&[#(#rows),*]), quote!(#count), quote!(#fixed))
    } else {
        let last = plan.customs.len();
        (
            quote!(&__KILN_BUFFER_TABLE),
            quote!(__KILN_BUFFER_AT[#last]),
            quote!(__KILN_FIXED_AT[#last]),
        )
    };
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
    let weights: Vec<DeferredWeight> = plan
        .steps
        .iter()
        .filter_map(|s| s.deferred_weight())
        .collect();
    // Dense layers alone, each reading what the one before wrote: every gradient of a
    // step can be bounded before its backward pass (`ModelSpec::dense_chain`).
    let dense_chain = plan.customs.is_empty()
        && !weights.is_empty()
        && weights.len() == plan.steps.len()
        && weights[0].input == 0
        && weights.windows(2).all(|w| w[0].output == w[1].input)
        && weights.last().is_some_and(|w| w.output == output_node);
    let deferred = weights.iter().map(|d| {
        let (offset, len) = (d.weight.start, d.weight.len());
        let (input, output, in_features) = (d.input, d.output, d.in_features);
        let activation = activation(d.activation);
        quote! {
            ::kiln::__private::DeferredWeight {
                weight_offset: #offset,
                weight_len: #len,
                input: #input,
                output: #output,
                in_features: #in_features,
                activation: #activation,
            }
        }
    });
    let onnx_plan = onnx_plan(plan);
    let (input_ports, output_ports) = match &checked.ports {
        Some(ports) => (
            super::ports::port_table(&ports.inputs, &plan.input_nodes),
            super::ports::port_table(&ports.outputs, &plan.output_nodes),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let token_vocab = match checked.layers.first().and_then(|l| l.op.token_vocab()) {
        Some(vocab) => quote!(::core::option::Option::Some(#vocab)),
        None => quote!(::core::option::Option::None),
    };
    let token_columns = plan
        .token_columns
        .iter()
        .map(|&(offset, len, vocab)| quote!((#offset, #len, #vocab)));
    quote! {
        ::kiln::__private::ModelSpec {
            name: #model_name,
            input: &[#(#input),*],
            output: &[#(#output),*],
            layers: &[#(#layers),*],
            params: #params,
            param_count: #param_count,
            buffers: #buffers,
            buffer_count: #buffer_count,
            fixed: #fixed,
            flops_per_sample: #flops,
            nodes: &[#(#nodes),*],
            output_node: #output_node,
            token_vocab: #token_vocab,
            token_columns: &[#(#token_columns),*],
            deferred: &[#(#deferred),*],
            dense_chain: #dense_chain,
            input_ports: &[#(#input_ports),*],
            output_ports: &[#(#output_ports),*],
            onnx: #onnx_plan,
        }
    }
}

/// The model's ONNX operators, step by step, or the first layer without them.
fn onnx_plan(plan: &Plan) -> TokenStream {
    let path = quote!(::kiln::__private::onnx::OnnxPlan);
    let mut nodes = Vec::new();
    for (step, (kind, input, output)) in plan.steps.iter().zip(&plan.step_layers) {
        let shapes = StepShapes { input, output };
        match step.onnx(&shapes) {
            Some(step_nodes) => nodes.extend(step_nodes),
            _ => return quote!(#path::Unsupported { kind: #kind }),
        }
    }
    quote!(#path::Graph(&[#(#nodes),*]))
}
