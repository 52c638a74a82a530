//! The typed side of a model with named inputs and outputs: `<Model>Inputs` and
//! `<Model>Outputs` (a field per input and output, generic over what each holds), the
//! loss of several outputs, and the methods that pack named data, run named inputs and
//! score each output. The model itself takes its inputs packed into one vector per
//! sample and gives its outputs packed likewise (see the runtime's `outputs` module).

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::Plan;
use crate::check::{dims, Checked};
use crate::parse::ModelDef;

/// The `Port` of each named input or output.
pub fn port_table(list: &[(String, Vec<usize>)], nodes: &[usize]) -> Vec<TokenStream> {
    list.iter()
        .zip(nodes)
        .map(|((port, shape), &node)| {
            let size: usize = shape.iter().product();
            let width = shape.last().copied().unwrap_or(1);
            quote! {
                ::kiln::outputs::Port {
                    name: #port, size: #size, width: #width, shape: &[#(#shape),*], node: #node,
                }
            }
        })
        .collect()
}

/// `(the two structs, at the call site; their impls and the model's methods, inside
/// the anonymous const)`, or nothing for a model without named inputs and outputs.
pub fn emit(def: &ModelDef, checked: &Checked, plan: &Plan) -> (TokenStream, TokenStream) {
    let Some(ports) = &checked.ports else {
        return (TokenStream::new(), TokenStream::new());
    };
    let ModelDef { vis, name, .. } = def;
    let inputs_name = format_ident!("{}Inputs", name);
    let outputs_name = format_ident!("{}Outputs", name);
    let kiln = quote!(::kiln);
    let private = quote!(::kiln::__private);
    let input_table = port_table(&ports.inputs, &plan.input_nodes);
    let output_table = port_table(&ports.outputs, &plan.output_nodes);
    // A keyword written raw (`r#type`) is a raw field again.
    let field = |list: &[(String, Vec<usize>)]| -> Vec<syn::Ident> {
        let span = proc_macro2::Span::call_site();
        list.iter()
            .map(|(n, _)| {
                syn::parse_str::<syn::Ident>(n).unwrap_or_else(|_| syn::Ident::new_raw(n, span))
            })
            .collect()
    };
    let (in_fields, out_fields) = (field(&ports.inputs), field(&ports.outputs));
    let in_params: Vec<syn::Ident> = (0..in_fields.len())
        .map(|k| format_ident!("I{k}"))
        .collect();
    let out_params: Vec<syn::Ident> = (0..out_fields.len())
        .map(|k| format_ident!("O{k}"))
        .collect();
    let docs = |list: &[(String, Vec<usize>)], what: &str| -> Vec<String> {
        list.iter()
            .map(|(n, shape)| format!(" The {what} `{n}`, `{}` per sample.", dims(shape)))
            .collect()
    };
    let (in_docs, out_docs) = (docs(&ports.inputs, "input"), docs(&ports.outputs, "output"));
    let inputs_doc = format!(
        " The inputs of [`{name}`], a field each: one buffer per input (slices of `T`) for \
         `{name}::dataset`, `{name}::pack_inputs` and `{name}::infer_outputs`."
    );
    let outputs_doc = format!(
        " The outputs of [`{name}`], a field each: their losses (a loss of all of them, \
         `{outputs_name} {{ .. }}` of `Loss`es, each with its `.weight(w)`), their targets \
         for `{name}::dataset`, their values from `{name}::infer_outputs` and their scores \
         from `{name}::evaluate_outputs`."
    );
    let types = quote! {
        #[doc = #inputs_doc]
        #[derive(Debug, Clone, Copy, PartialEq, Default)]
        #vis struct #inputs_name<#(#in_params),*> {
            #(#[doc = #in_docs] pub #in_fields: #in_params,)*
        }

        #[doc = #outputs_doc]
        #[derive(Debug, Clone, Copy, PartialEq, Default)]
        #vis struct #outputs_name<#(#out_params),*> {
            #(#[doc = #out_docs] pub #out_fields: #out_params,)*
        }
    };
    let n_out = out_fields.len();
    let first_out = &out_fields[0];
    let out_names: Vec<&String> = ports.outputs.iter().map(|(n, _)| n).collect();
    let slices_in = in_params.iter().map(|_| quote!(&[T]));
    let slices_in2 = slices_in.clone();
    let slices_in3 = slices_in.clone();
    let slices_out = out_params.iter().map(|_| quote!(&[T]));
    let targets_out = out_params.iter().map(|_| quote!(&[Y]));
    let evaluations = out_params.iter().map(|_| quote!(#kiln::train::Evaluation));
    let output_nodes = &plan.output_nodes;
    let input_type = quote!(<Self as #private::Model<T>>::Input);
    let items = quote! {
        const __KILN_INPUTS: &[#kiln::outputs::Port] = &[#(#input_table),*];
        const __KILN_OUTPUTS: &[#kiln::outputs::Port] = &[#(#output_table),*];

        #[automatically_derived]
        impl<T, Y, #(#out_params),*> #kiln::Loss<T> for #outputs_name<#(#out_params),*>
        where
            T: #private::Float,
            Y: #kiln::data::Target,
            #(#out_params: #kiln::Loss<T, Target = [Y]>,)*
        {
            type Target = [Y];

            fn evaluate(
                &self,
                output: &[T],
                target: &[Y],
                layout: #kiln::loss::OutputLayout,
                grad_output: ::core::option::Option<&mut [T]>,
            ) -> #kiln::Result<T> {
                #kiln::outputs::outputs_loss(
                    __KILN_OUTPUTS,
                    &[#(&self.#out_fields),*],
                    output,
                    target,
                    layout,
                    grad_output,
                    1.0,
                    &mut [],
                )
            }

            fn reduction(&self) -> #kiln::Reduction {
                #kiln::Loss::<T>::reduction(&self.#first_out)
            }

            fn outputs(&self) -> usize {
                #n_out
            }

            fn output_names(&self) -> &'static [&'static str] {
                &[#(#out_names),*]
            }

            fn evaluate_scored(
                &self,
                output: &[T],
                target: &[Y],
                layout: #kiln::loss::OutputLayout,
                grad_output: ::core::option::Option<&mut [T]>,
                weight: f64,
                scores: &mut [#kiln::loss::OutputScore],
            ) -> #kiln::Result<T> {
                #kiln::outputs::outputs_loss(
                    __KILN_OUTPUTS,
                    &[#(&self.#out_fields),*],
                    output,
                    target,
                    layout,
                    grad_output,
                    weight,
                    scores,
                )
            }
        }

        #[automatically_derived]
        impl<T: #private::Float> #name<T> {
            /// The model's named inputs in order: name, values per sample, last axis and
            /// workspace node.
            pub const INPUTS: &'static [#kiln::outputs::Port] = __KILN_INPUTS;
            /// The model's named outputs in order, as [`INPUTS`](Self::INPUTS).
            pub const OUTPUTS: &'static [#kiln::outputs::Port] = __KILN_OUTPUTS;

            /// One buffer per input (each a whole number of samples, all the same
            /// number) packed into what the model takes: each sample's inputs one after
            /// the other. An input of another length is an error naming it.
            pub fn pack_inputs(inputs: #inputs_name<#(#slices_in),*>) -> #kiln::Result<::std::vec::Vec<T>> {
                let mut packed = ::std::vec::Vec::new();
                #kiln::outputs::pack_inputs(__KILN_INPUTS, &[#(inputs.#in_fields),*], &mut packed)?;
                ::core::result::Result::Ok(packed)
            }

            /// A dataset of named inputs and each output's targets (each a whole number
            /// per sample: one label, or one value per output value), packed once.
            /// Inputs or targets that disagree on the number of samples are an error
            /// naming them.
            pub fn dataset<Y: #kiln::data::Target>(
                inputs: #inputs_name<#(#slices_in2),*>,
                targets: #outputs_name<#(#targets_out),*>,
            ) -> #kiln::Result<#kiln::data::Dataset<T, #input_type, Y>> {
                let mut packed = ::std::vec::Vec::new();
                let n = #kiln::outputs::pack_inputs(__KILN_INPUTS, &[#(inputs.#in_fields),*], &mut packed)?;
                let mut packed_targets = ::std::vec::Vec::new();
                #kiln::outputs::pack_targets(
                    &[#(#out_names),*],
                    &[#(targets.#out_fields),*],
                    n,
                    &mut packed_targets,
                )?;
                #kiln::data::Dataset::new(packed, packed_targets, ::core::option::Option::None)
            }

            /// Inference on a batch of named inputs (dropout off, inputs checked as by
            /// `try_infer`): each output's values, batch-major, read from the model's
            /// workspace. Allocates nothing after the first batch of a size.
            pub fn infer_outputs(
                &mut self,
                inputs: #inputs_name<#(#slices_in3),*>,
            ) -> #kiln::Result<#outputs_name<#(#slices_out),*>> {
                #kiln::outputs::with_packed(|packed: &mut ::std::vec::Vec<T>| -> #kiln::Result<()> {
                    #kiln::outputs::pack_inputs(__KILN_INPUTS, &[#(inputs.#in_fields),*], packed)?;
                    let x = #kiln::TensorRef::<T, #input_type>::new(packed)?;
                    #private::Model::try_infer(self, x)?;
                    ::core::result::Result::Ok(())
                })?;
                ::core::result::Result::Ok(#outputs_name {
                    #(#out_fields: #kiln::outputs::node_values(self, #output_nodes),)*
                })
            }

            /// Each output's loss (weight included) and, for class labels, accuracy on
            /// `data`, in batches of `batch_size` with dropout off.
            pub fn evaluate_outputs<Y: #kiln::data::Target, #(#out_params: #kiln::Loss<T, Target = [Y]>),*>(
                &mut self,
                data: &#kiln::data::Dataset<T, #input_type, Y>,
                losses: &#outputs_name<#(#out_params),*>,
                batch_size: usize,
            ) -> #kiln::Result<#outputs_name<#(#evaluations),*>> {
                let all = #kiln::train::evaluate_outputs(self, data, losses, batch_size)?;
                let [#(#out_fields),*]: [#kiln::train::Evaluation; #n_out] = all
                    .try_into()
                    .map_err(|_| #kiln::Error::Mismatch("one evaluation per output".into()))?;
                ::core::result::Result::Ok(#outputs_name { #(#out_fields),* })
            }
        }
    };
    (types, items)
}
