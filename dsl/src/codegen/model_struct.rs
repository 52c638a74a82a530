//! The generated struct and its inherent items: `new` and the compile-time constants.

use proc_macro2::TokenStream;
use quote::quote;

use super::Plan;
use crate::check::{dims, Checked};
use crate::parse::ModelDef;

/// `(the struct, its inherent impl)`: the struct stands at the call site, the impl goes
/// inside the anonymous const with the other generated items.
pub fn emit(def: &ModelDef, checked: &Checked, plan: &Plan) -> (TokenStream, TokenStream) {
    let ModelDef {
        attrs, vis, name, ..
    } = def;
    let shape_doc = format!(
        " Input per sample: `{}`; output per sample: `{}`.",
        dims(&checked.input),
        dims(&checked.output)
    );
    let params = super::model_impl::param_count(plan);
    let flops = super::model_impl::flops_per_sample(checked);
    let structure = quote! {
        #(#attrs)*
        ///
        #[doc = #shape_doc]
        #vis struct #name<T: ::kiln::__private::Float = ::core::primitive::f32> {
            state: ::kiln::__private::ModelState<T>,
        }
    };
    let inherent = quote! {
        #[automatically_derived]
        impl<T: ::kiln::__private::Float> #name<T> {
            /// Number of parameters.
            pub const PARAM_COUNT: usize = #params;
            /// Forward floating-point operations per sample (a multiply-add counts 2).
            pub const FLOPS_PER_SAMPLE: u64 = #flops;

            /// A new model with PyTorch's default initialisation, drawn from `seed`.
            pub fn new(seed: u64) -> Self {
                <Self as ::kiln::__private::Model<T>>::with_seed(seed)
            }
        }

        #[automatically_derived]
        impl<T: ::kiln::__private::Float> ::core::clone::Clone for #name<T> {
            fn clone(&self) -> Self {
                Self { state: ::core::clone::Clone::clone(&self.state) }
            }
        }
    };
    (structure, inherent)
}
