//! The forward and backward passes: one block of kernel calls per step.
//!
//! Backward runs the steps in reverse. A node's gradient is written by each step that
//! reads the node; the first of them (in reverse order) replaces it and the others
//! accumulate, which is how a residual skip and its block sum their gradients. Nodes
//! whose gradient nothing needs (the input, and everything before the first layer with
//! parameters) are never computed.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::{Plan, Step};
use crate::check::Act;

fn activation(act: Option<Act>) -> TokenStream {
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

fn rows(rows_per_sample: usize) -> TokenStream {
    if rows_per_sample == 1 {
        quote!(batch)
    } else {
        quote!(batch * #rows_per_sample)
    }
}

pub fn forward(plan: &Plan) -> TokenStream {
    let layers = quote!(::kiln::__private::layers);
    let steps = plan.steps.iter().map(|step| match step {
        Step::Dense {
            input,
            output,
            in_features,
            out_features,
            rows_per_sample,
            weight,
            bias,
            fused,
        } => {
            let rows = rows(*rows_per_sample);
            let act = activation(*fused);
            let (w0, w1) = (weight.start, weight.end);
            let bias = match bias {
                Some(b) => {
                    let (b0, b1) = (b.start, b.end);
                    quote!(::core::option::Option::Some(&params[#b0..#b1]))
                }
                None => quote!(::core::option::Option::None),
            };
            quote! {
                {
                    let (input, output) = ws.forward_io(#input, #output);
                    #layers::dense_forward::<T, #in_features, #out_features>(
                        output, input, &params[#w0..#w1], #bias, #act, #rows,
                    );
                }
            }
        }
        Step::Activation { act, input, output } => {
            let act = activation(Some(*act));
            quote! {
                {
                    let (input, output) = ws.forward_io(#input, #output);
                    #layers::activation_forward(#act, output, input);
                }
            }
        }
        Step::Softmax {
            log,
            width,
            input,
            output,
        } => {
            let kernel = if *log {
                quote!(log_softmax_forward)
            } else {
                quote!(softmax_forward)
            };
            quote! {
                {
                    let (input, output) = ws.forward_io(#input, #output);
                    #layers::#kernel::<T, #width>(output, input);
                }
            }
        }
        Step::Dropout {
            p,
            input,
            output,
            mask,
        } => {
            let p = Literal::f64_suffixed(*p);
            quote! {
                {
                    let (input, output, mask) = ws.forward_io_aux(#input, #output, #mask);
                    #layers::dropout_forward(output, mask, input, #p, rng.as_deref_mut());
                }
            }
        }
        Step::Residual {
            input,
            inner,
            output,
        } => {
            quote! {
                {
                    let (input, inner, output) = ws.forward_io2(#input, #inner, #output);
                    #layers::residual_forward(output, input, inner);
                }
            }
        }
    });
    let uses_rng = plan.steps.iter().any(|s| matches!(s, Step::Dropout { .. }));
    let rng = if uses_rng {
        quote!(mut rng)
    } else {
        quote!(_rng)
    };
    let uses_params = plan.steps.iter().any(Step::has_params);
    let batch = uses_params.then(|| quote!(let batch = ws.batch();));
    let params = if uses_params {
        quote!(params)
    } else {
        quote!(_params)
    };
    quote! {
        fn forward_pass(
            #params: &[T],
            ws: &mut ::kiln::__private::Workspace<T>,
            #rng: ::core::option::Option<&mut ::kiln::__private::Rng>,
        ) {
            #batch
            #(#steps)*
        }
    }
}

pub fn backward(plan: &Plan) -> TokenStream {
    let layers = quote!(::kiln::__private::layers);
    let accum_path = quote!(::kiln::__private::layers::Accum);
    let some = quote!(::core::option::Option::Some);
    let none = quote!(::core::option::Option::None);

    // Which node gradients are needed at all.
    let mut needed = vec![false; plan.node_sizes.len()];
    for step in &plan.steps {
        needed[step.output()] = step.has_params() || step.inputs().iter().any(|&n| needed[n]);
    }
    let mut written = vec![false; plan.node_sizes.len()];
    let mut blocks = Vec::new();
    for step in plan.steps.iter().rev() {
        if !needed[step.output()] {
            continue;
        }
        // For each input: None if its gradient is not needed, else Replace or Add.
        let mut accum_for = |node: usize| -> Option<TokenStream> {
            if !needed[node] {
                return None;
            }
            let first = !written[node];
            written[node] = true;
            Some(if first {
                quote!(#accum_path::Replace)
            } else {
                quote!(#accum_path::Add)
            })
        };
        let block = match step {
            Step::Dense {
                input,
                output,
                in_features,
                out_features,
                rows_per_sample,
                weight,
                bias,
                fused,
            } => {
                let rows = rows(*rows_per_sample);
                let act = activation(*fused);
                let (w0, w1) = (weight.start, weight.end);
                let grad_input = match accum_for(*input) {
                    Some(accum) => quote!(#some((io.grad_input, #accum))),
                    None => quote!(#none),
                };
                let (grads_split, grad_bias) = match bias {
                    Some(b) => {
                        let (split, end) = (weight.len(), b.end);
                        (
                            quote!(let (grad_weight, grad_bias) = grads[#w0..#end].split_at_mut(#split);),
                            quote!(#some(grad_bias)),
                        )
                    }
                    None => (
                        quote!(let grad_weight = &mut grads[#w0..#w1];),
                        quote!(#none),
                    ),
                };
                quote! {
                        {
                        let io = ws.backward_io(#input, #output, #none);
                        #grads_split
                        #layers::dense_backward::<T, #in_features, #out_features>(
                            #grad_input, grad_weight, #grad_bias, io.input, &params[#w0..#w1],
                            io.output, io.grad_output, #act, #rows,
                        );
                    }
                }
            }
            Step::Activation { act, input, output } => {
                let act = activation(Some(*act));
                let accum = accum_for(*input).unwrap_or_else(|| quote!(#accum_path::Replace));
                quote! {
                        {
                        let io = ws.backward_io(#input, #output, #none);
                        #layers::activation_backward(#act, io.grad_input, #accum, io.input, io.output, io.grad_output);
                    }
                }
            }
            Step::Softmax {
                log,
                width,
                input,
                output,
            } => {
                let kernel = if *log {
                    quote!(log_softmax_backward)
                } else {
                    quote!(softmax_backward)
                };
                let accum = accum_for(*input).unwrap_or_else(|| quote!(#accum_path::Replace));
                quote! {
                        {
                        let io = ws.backward_io(#input, #output, #none);
                        #layers::#kernel::<T, #width>(io.grad_input, #accum, io.output, io.grad_output);
                    }
                }
            }
            Step::Dropout {
                input,
                output,
                mask,
                ..
            } => {
                let accum = accum_for(*input).unwrap_or_else(|| quote!(#accum_path::Replace));
                quote! {
                        {
                        let io = ws.backward_io(#input, #output, #some(#mask));
                        #layers::dropout_backward(io.grad_input, #accum, io.aux, io.grad_output);
                    }
                }
            }
            Step::Residual {
                input,
                inner,
                output,
            } => {
                let _ = accum_for(*inner);
                let grad_input = match accum_for(*input) {
                    Some(accum) => quote!(#some((grad_input, #accum))),
                    None => quote!(#none),
                };
                quote! {
                        {
                        let [grad_input, grad_inner, grad_output] = ws.grads3(#input, #inner, #output);
                        #layers::residual_backward(#grad_input, grad_inner, grad_output);
                    }
                }
            }
        };
        blocks.push(block);
    }
    let uses_params = plan.steps.iter().any(Step::has_params);
    let batch = uses_params.then(|| quote!(let batch = ws.batch();));
    let (params, grads, ws) = if uses_params {
        (quote!(params), quote!(grads), quote!(ws))
    } else {
        (quote!(_params), quote!(_grads), quote!(_ws))
    };
    quote! {
        fn backward_pass(
            #params: &[T],
            #grads: &mut [T],
            #ws: &mut ::kiln::__private::Workspace<T>,
        ) {
            #batch
            #(#blocks)*
        }
    }
}
