//! The forward and backward passes: one block of kernel calls per step, each emitted
//! by its layer's [`Step`].
//!
//! Backward runs the steps in reverse. A node's gradient is written by each step that
//! reads the node; the first of them (in reverse order) replaces it and the others
//! accumulate, which is how a residual skip and its block sum their gradients. Nodes
//! whose gradient nothing needs (the input, and everything before the first layer with
//! parameters) are never computed.

use proc_macro2::TokenStream;
use quote::quote;

use super::Plan;
use crate::layers::{slice, GradFlow, Step};

fn has_params(step: &dyn Step) -> bool {
    step.has_params()
}

pub fn forward(plan: &Plan) -> TokenStream {
    let steps = plan.steps.iter().map(|step| step.forward());
    let uses = |f: &dyn Fn(&dyn Step) -> bool| plan.steps.iter().any(|s| f(s.as_ref()));
    let name = |used: bool, name: &str| {
        let ident = quote::format_ident!("{}{}", if used { "" } else { "_" }, name);
        quote!(#ident)
    };
    let params = name(uses(&has_params), "params");
    let buffers = name(uses(&|s| s.uses_buffers()), "buffers");
    let mode = if uses(&|s| s.uses_mode() == Some(true)) {
        quote!(mut mode)
    } else {
        name(uses(&|s| s.uses_mode().is_some()), "mode")
    };
    let batch = uses(&|s| s.uses_batch()).then(|| quote!(let batch = ws.batch();));
    quote! {
        fn forward_pass(
            #params: &[T],
            #buffers: &mut [T],
            ws: &mut ::kiln::__private::Pass<'_, T>,
            #mode: ::kiln::__private::Mode<'_>,
            _: ::kiln::__private::Sealed,
        ) {
            #batch
            #(#steps)*
        }
    }
}

/// Which nodes' gradients a backward pass computes: those downstream of a layer with
/// parameters, and with `input` everything downstream of the input node too.
fn needed(plan: &Plan, input: bool) -> Vec<bool> {
    let mut needed = vec![false; plan.node_sizes.len()];
    needed[0] = input;
    for step in &plan.steps {
        needed[step.output()] =
            has_params(step.as_ref()) || step.inputs().iter().any(|&n| needed[n]);
    }
    needed
}

pub fn backward(plan: &Plan) -> TokenStream {
    let some = quote!(::core::option::Option::Some);
    // A model that reads token ids has no input gradient.
    let reads_tokens = plan.reads_tokens;
    let always = needed(plan, false);
    let mut flow = GradFlow::new(needed(plan, !reads_tokens), always.clone());
    let mut blocks = Vec::new();
    for (step, &end) in plan.steps.iter().zip(&plan.step_param_ends).rev() {
        let output = step.output();
        if !flow.needed[output] {
            continue;
        }
        let block = step.backward(&mut flow);
        // With layers frozen, a step before every trainable one is skipped; without,
        // or for the input's gradient, `reaches` is always true.
        blocks.push(if always[output] {
            quote!(if ws.reaches(#end) { #block })
        } else {
            quote!(if to_input { #block })
        });
        // The step's parameters are read by nothing later in the pass: with an update
        // in force, make it now, while the gradients are fresh (unless the kernel made
        // it itself).
        if !step.updates_inside() {
            let ranges: Vec<TokenStream> = step.param_ranges().iter().map(slice).collect();
            if !ranges.is_empty() {
                blocks.push(quote! {
                    if let #some(rate) = update {
                        #(::kiln::__private::apply_linear_step(&mut params[#ranges], &grads[#ranges], rate);)*
                    }
                });
            }
        }
    }
    let uses_params = plan.steps.iter().any(|s| has_params(s.as_ref()));
    let batch = plan
        .steps
        .iter()
        .any(|s| s.uses_batch() && flow.needed[s.output()])
        .then(|| quote!(let batch = ws.batch();));
    let conditional = flow.needed != always;
    let name = |used: bool, name: &str| {
        let ident = quote::format_ident!("{}{}", if used { "" } else { "_" }, name);
        quote!(#ident)
    };
    let (params, grads, update) = (
        name(uses_params, "params"),
        name(uses_params, "grads"),
        name(uses_params, "update"),
    );
    let ws = name(!blocks.is_empty(), "ws");
    let to_input = name(conditional, "to_input");
    quote! {
        fn backward_pass(
            #params: &mut [T],
            #grads: &mut [T],
            #ws: &mut ::kiln::__private::Pass<'_, T>,
            #update: ::core::option::Option<T>,
            #to_input: bool,
            _: ::kiln::__private::Sealed,
        ) {
            #batch
            #(#blocks)*
        }
    }
}
