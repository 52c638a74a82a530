//! The forward and backward passes: one block of kernel calls per step.
//!
//! Backward runs the steps in reverse. A node's gradient is written by each step that
//! reads the node; the first of them (in reverse order) replaces it and the others
//! accumulate, which is how a residual skip and its block sum their gradients. Nodes
//! whose gradient nothing needs (the input, and everything before the first layer with
//! parameters) are never computed.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::{Geometry, Plan, Step};
use crate::check::{Act, Cell};

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

/// `&::kiln::__private::layers::Conv2dShape { .. }`, a promoted constant.
fn geometry(g: &Geometry) -> TokenStream {
    let Geometry {
        in_channels,
        in_size: (ih, iw),
        out_channels,
        kernel: (kh, kw),
        stride: (sh, sw),
        padding: (ph, pw),
        dilation: (dh, dw),
        out_size: (oh, ow),
    } = *g;
    quote! {
        &::kiln::__private::layers::Conv2dShape {
            in_channels: #in_channels,
            in_size: (#ih, #iw),
            out_channels: #out_channels,
            kernel: (#kh, #kw),
            stride: (#sh, #sw),
            padding: (#ph, #pw),
            dilation: (#dh, #dw),
            out_size: (#oh, #ow),
        }
    }
}

fn batch_norm_shape(channels: usize, inner: usize, eps: f64, momentum: f64) -> TokenStream {
    let (eps, momentum) = (Literal::f64_suffixed(eps), Literal::f64_suffixed(momentum));
    quote! {
        &::kiln::__private::layers::BatchNormShape {
            channels: #channels,
            inner: #inner,
            eps: #eps,
            momentum: #momentum,
        }
    }
}

fn recurrent_shape(cell: Cell, steps: usize, features: usize, hidden: usize) -> TokenStream {
    let cell = match cell {
        Cell::Rnn => quote!(Rnn),
        Cell::Lstm => quote!(Lstm),
        Cell::Gru => quote!(Gru),
    };
    quote! {
        &::kiln::__private::layers::RecurrentShape {
            cell: ::kiln::__private::layers::Cell::#cell,
            steps: #steps,
            features: #features,
            hidden: #hidden,
        }
    }
}

fn attention_shape(steps: usize, dim: usize, heads: usize, causal: bool) -> TokenStream {
    quote! {
        &::kiln::__private::layers::AttentionShape {
            steps: #steps,
            dim: #dim,
            heads: #heads,
            causal: #causal,
        }
    }
}

fn slice(range: &std::ops::Range<usize>) -> TokenStream {
    let (a, b) = (range.start, range.end);
    quote!(#a..#b)
}

fn optional_params(range: &Option<std::ops::Range<usize>>) -> TokenStream {
    match range {
        Some(r) => {
            let r = slice(r);
            quote!(::core::option::Option::Some(&params[#r]))
        }
        None => quote!(::core::option::Option::None),
    }
}

pub fn forward(plan: &Plan) -> TokenStream {
    let layers = quote!(::kiln::__private::layers);
    let none = quote!(::core::option::Option::None);
    let some = quote!(::core::option::Option::Some);
    let steps = plan.steps.iter().map(|step| match step {
        Step::Dense { input, output, in_features, out_features, rows_per_sample, weight, bias, fused } => {
            let rows = rows(*rows_per_sample);
            let act = activation(*fused);
            let (weight, bias) = (slice(weight), optional_params(bias));
            quote! {
                {
                    let io = ws.forward_io(#input, #output, #none);
                    #layers::dense_forward::<T, #in_features, #out_features>(
                        io.output, io.input, &params[#weight], #bias, #act, #rows,
                    );
                }
            }
        }
        Step::Conv { input, output, cols, geometry: g, weight, bias, fused, .. } => {
            let (shape, act) = (geometry(g), activation(*fused));
            let (weight, bias) = (slice(weight), optional_params(bias));
            quote! {
                {
                    let io = ws.forward_io(#input, #output, #some(#cols));
                    #layers::conv2d_forward::<T>(
                        #shape, io.output, io.aux, io.input, &params[#weight], #bias, #act, batch,
                    );
                }
            }
        }
        Step::Pool { max: true, input, output, argmax, geometry: g } => {
            let shape = geometry(g);
            let argmax = argmax.unwrap_or_default();
            quote! {
                {
                    let io = ws.forward_io(#input, #output, #some(#argmax));
                    #layers::max_pool2d_forward::<T>(#shape, io.output, io.aux, io.input, batch);
                }
            }
        }
        Step::Pool { max: false, input, output, geometry: g, .. } => {
            let shape = geometry(g);
            quote! {
                {
                    let io = ws.forward_io(#input, #output, #none);
                    #layers::avg_pool2d_forward::<T>(#shape, io.output, io.input, batch);
                }
            }
        }
        Step::GlobalAvgPool { input, output, channels, inner } => quote! {
            {
                let io = ws.forward_io(#input, #output, #none);
                #layers::global_avg_pool_forward::<T, #channels>(io.output, io.input, #inner, batch);
            }
        },
        Step::BatchNorm { input, output, channels, inner, eps, momentum, gamma, beta, running, saved } => {
            let shape = batch_norm_shape(*channels, *inner, *eps, *momentum);
            let (gamma, beta, running, saved) = (slice(gamma), slice(beta), slice(running), slice(saved));
            quote! {
                {
                    let io = ws.forward_io(#input, #output, #none);
                    #layers::batch_norm_forward::<T>(
                        #shape, io.output, &mut io.fixed[#saved], &mut buffers[#running], io.input,
                        &params[#gamma], &params[#beta], mode.training(), batch,
                    );
                }
            }
        }
        Step::Recurrent { input, output, aux, scratch, cell, steps, features, hidden, weight_ih, weight_hh, bias_ih, bias_hh } => {
            let shape = recurrent_shape(*cell, *steps, *features, *hidden);
            let (wi, wh, bi, bh) = (slice(weight_ih), slice(weight_hh), slice(bias_ih), slice(bias_hh));
            let scratch = slice(scratch);
            quote! {
                {
                    let io = ws.forward_io(#input, #output, #some(#aux));
                    #layers::recurrent_forward::<T>(
                        #shape, io.output, io.aux, &mut io.fixed[#scratch], io.input,
                        &params[#wi], &params[#wh], &params[#bi], &params[#bh], batch,
                    );
                }
            }
        }
        Step::Embedding { input, output, dim, table } => {
            let table = slice(table);
            quote! {
                {
                    let io = ws.forward_io(#input, #output, #none);
                    #layers::embedding_forward::<T>(io.output, io.input, &params[#table], #dim);
                }
            }
        }
        Step::Positional { input, output, table } => {
            let table = slice(table);
            quote! {
                {
                    let io = ws.forward_io(#input, #output, #none);
                    #layers::positional_forward::<T>(io.output, io.input, &params[#table]);
                }
            }
        }
        Step::LayerNorm { input, output, saved, width, eps, gamma, beta } => {
            let (gamma, beta, eps) = (slice(gamma), slice(beta), Literal::f64_suffixed(*eps));
            quote! {
                {
                    let io = ws.forward_io(#input, #output, #some(#saved));
                    #layers::layer_norm_forward::<T>(io.output, io.aux, io.input, &params[#gamma], &params[#beta], #width, #eps);
                }
            }
        }
        Step::Attention { input, output, aux, steps, dim, heads, causal, in_weight, in_bias, out_weight, out_bias } => {
            let shape = attention_shape(*steps, *dim, *heads, *causal);
            let (wi, bi, wo, bo) = (slice(in_weight), slice(in_bias), slice(out_weight), slice(out_bias));
            quote! {
                {
                    let io = ws.forward_io(#input, #output, #some(#aux));
                    #layers::attention_forward::<T>(
                        #shape, io.output, io.aux, io.input, &params[#wi], &params[#bi],
                        &params[#wo], &params[#bo], batch,
                    );
                }
            }
        }
        Step::TakeLast { input, output, steps, width } => quote! {
            {
                let io = ws.forward_io(#input, #output, #none);
                #layers::last_step_forward::<T>(io.output, io.input, #steps, #width, batch);
            }
        },
        Step::Activation { act, input, output } => {
            let act = activation(Some(*act));
            quote! {
                {
                    let io = ws.forward_io(#input, #output, #none);
                    #layers::activation_forward(#act, io.output, io.input);
                }
            }
        }
        Step::Softmax { log, width, input, output } => {
            let kernel = if *log { quote!(log_softmax_forward) } else { quote!(softmax_forward) };
            quote! {
                {
                    let io = ws.forward_io(#input, #output, #none);
                    #layers::#kernel::<T, #width>(io.output, io.input);
                }
            }
        }
        Step::Dropout { p, input, output, mask } => {
            let p = Literal::f64_suffixed(*p);
            quote! {
                {
                    let io = ws.forward_io(#input, #output, #some(#mask));
                    #layers::dropout_forward(io.output, io.aux, io.input, #p, mode.rng());
                }
            }
        }
        Step::Residual { input, inner, output } => quote! {
            {
                let (input, inner, output) = ws.forward_io2(#input, #inner, #output);
                #layers::residual_forward(output, input, inner);
            }
        },
    });
    let uses = |f: fn(&Step) -> bool| plan.steps.iter().any(f);
    let name = |used: bool, name: &str| {
        let ident = quote::format_ident!("{}{}", if used { "" } else { "_" }, name);
        quote!(#ident)
    };
    let params = name(uses(Step::has_params), "params");
    let buffers = name(uses(|s| matches!(s, Step::BatchNorm { .. })), "buffers");
    let mode = if uses(|s| matches!(s, Step::Dropout { .. })) {
        quote!(mut mode)
    } else {
        name(uses(|s| matches!(s, Step::BatchNorm { .. })), "mode")
    };
    let batch = uses(Step::uses_batch).then(|| quote!(let batch = ws.batch();));
    quote! {
        fn forward_pass(
            #params: &[T],
            #buffers: &mut [T],
            ws: &mut ::kiln::__private::Pass<'_, T>,
            #mode: ::kiln::__private::Mode<'_>,
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
        let replace = quote!(#accum_path::Replace);
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
                let grad_input = match accum_for(*input) {
                    Some(accum) => quote!(#some((io.grad_input, #accum))),
                    None => quote!(#none),
                };
                let (split, grad_bias) = split_grads(weight, bias);
                let (split_params, bias) = split_params(weight, bias);
                let weight = slice(weight);
                quote! {
                    {
                        let io = ws.backward_io(#input, #output, #none);
                        if let #some(rate) = update {
                            #split_params
                            #layers::dense_backward_update::<T, #in_features, #out_features>(
                                #grad_input, weight, #bias, rate, io.input, io.output,
                                io.grad_output, #act, #rows,
                            );
                        } else {
                            #split
                            #layers::dense_backward::<T, #in_features, #out_features>(
                                #grad_input, grad_weight, #grad_bias, io.input, &params[#weight],
                                io.output, io.grad_output, #act, #rows,
                            );
                        }
                    }
                }
            }
            Step::Conv {
                input,
                output,
                cols,
                geometry: g,
                weight,
                bias,
                fused,
                partial,
            } => {
                let (shape, act) = (geometry(g), activation(*fused));
                let grad_input = match accum_for(*input) {
                    Some(accum) => quote!(#some((io.grad_input, #accum))),
                    None => quote!(#none),
                };
                let (split, grad_bias) = split_grads(weight, bias);
                let (weight, partial) = (slice(weight), slice(partial));
                quote! {
                    {
                        let io = ws.backward_io(#input, #output, #some(#cols));
                        #split
                        #layers::conv2d_backward::<T>(
                            #shape, #grad_input, grad_weight, #grad_bias, &mut io.fixed[#partial],
                            io.aux, io.input, &params[#weight], io.output, io.grad_output, #act,
                            batch,
                        );
                    }
                }
            }
            Step::Pool {
                max,
                input,
                output,
                argmax,
                geometry: g,
            } => {
                let shape = geometry(g);
                let accum = accum_for(*input).unwrap_or_else(|| replace.clone());
                if *max {
                    let argmax = argmax.unwrap_or_default();
                    quote! {
                        {
                            let io = ws.backward_io(#input, #output, #some(#argmax));
                            #layers::max_pool2d_backward::<T>(#shape, io.grad_input, #accum, io.aux, io.grad_output, batch);
                        }
                    }
                } else {
                    quote! {
                        {
                            let io = ws.backward_io(#input, #output, #none);
                            #layers::avg_pool2d_backward::<T>(#shape, io.grad_input, #accum, io.grad_output, batch);
                        }
                    }
                }
            }
            Step::GlobalAvgPool {
                input,
                output,
                channels,
                inner,
            } => {
                let accum = accum_for(*input).unwrap_or_else(|| replace.clone());
                quote! {
                    {
                        let io = ws.backward_io(#input, #output, #none);
                        #layers::global_avg_pool_backward::<T, #channels>(io.grad_input, #accum, io.grad_output, #inner, batch);
                    }
                }
            }
            Step::BatchNorm {
                input,
                output,
                channels,
                inner,
                eps,
                momentum,
                gamma,
                beta,
                saved,
                ..
            } => {
                let shape = batch_norm_shape(*channels, *inner, *eps, *momentum);
                let grad_input = match accum_for(*input) {
                    Some(accum) => quote!(#some((io.grad_input, #accum))),
                    None => quote!(#none),
                };
                let both = slice(&(gamma.start..beta.end));
                let (gamma, saved) = (slice(gamma), slice(saved));
                quote! {
                    {
                        let io = ws.backward_io(#input, #output, #none);
                        let (grad_gamma, grad_beta) = grads[#both].split_at_mut(#channels);
                        #layers::batch_norm_backward::<T>(
                            #shape, #grad_input, grad_gamma, grad_beta, &io.fixed[#saved], io.input,
                            &params[#gamma], io.grad_output, batch,
                        );
                    }
                }
            }
            Step::Recurrent {
                input,
                output,
                aux,
                cell,
                steps,
                features,
                hidden,
                weight_ih,
                weight_hh,
                bias_ih,
                ..
            } => {
                let shape = recurrent_shape(*cell, *steps, *features, *hidden);
                let grad_input = match accum_for(*input) {
                    Some(accum) => quote!(#some((io.grad_input, #accum))),
                    None => quote!(#none),
                };
                // The four tensors are contiguous: weight_ih, weight_hh, bias_ih, bias_hh.
                let all = slice(
                    &(weight_ih.start
                        ..weight_ih.start + weight_ih.len() + weight_hh.len() + 2 * bias_ih.len()),
                );
                let (len_wi, len_wh, len_b) = (weight_ih.len(), weight_hh.len(), bias_ih.len());
                let (wi, wh) = (slice(weight_ih), slice(weight_hh));
                quote! {
                    {
                        let io = ws.backward_io(#input, #output, #some(#aux));
                        let (grad_weight_ih, rest) = grads[#all].split_at_mut(#len_wi);
                        let (grad_weight_hh, rest) = rest.split_at_mut(#len_wh);
                        let (grad_bias_ih, grad_bias_hh) = rest.split_at_mut(#len_b);
                        #layers::recurrent_backward::<T>(
                            #shape, #grad_input, grad_weight_ih, grad_weight_hh, grad_bias_ih,
                            grad_bias_hh, io.aux, io.input, io.output, &params[#wi], &params[#wh],
                            io.grad_output, batch,
                        );
                    }
                }
            }
            Step::Embedding {
                input,
                output,
                dim,
                table,
            } => {
                let _ = accum_for(*input);
                let table = slice(table);
                quote! {
                    {
                        let io = ws.backward_io(#input, #output, #none);
                        #layers::embedding_backward::<T>(&mut grads[#table], io.input, io.grad_output, #dim);
                    }
                }
            }
            Step::Positional {
                input,
                output,
                table,
            } => {
                let grad_input = match accum_for(*input) {
                    Some(accum) => quote!(#some((io.grad_input, #accum))),
                    None => quote!(#none),
                };
                let table = slice(table);
                quote! {
                    {
                        let io = ws.backward_io(#input, #output, #none);
                        #layers::positional_backward::<T>(#grad_input, &mut grads[#table], io.grad_output);
                    }
                }
            }
            Step::LayerNorm {
                input,
                output,
                saved,
                width,
                gamma,
                beta,
                ..
            } => {
                let grad_input = match accum_for(*input) {
                    Some(accum) => quote!(#some((io.grad_input, #accum))),
                    None => quote!(#none),
                };
                let both = slice(&(gamma.start..beta.end));
                let gamma_range = slice(gamma);
                quote! {
                    {
                        let io = ws.backward_io(#input, #output, #some(#saved));
                        let (grad_gamma, grad_beta) = grads[#both].split_at_mut(#width);
                        #layers::layer_norm_backward::<T>(
                            #grad_input, grad_gamma, grad_beta, io.aux, io.input, &params[#gamma_range],
                            io.grad_output, #width,
                        );
                    }
                }
            }
            Step::Attention {
                input,
                output,
                aux,
                steps,
                dim,
                heads,
                causal,
                in_weight,
                in_bias,
                out_weight,
                out_bias,
            } => {
                let shape = attention_shape(*steps, *dim, *heads, *causal);
                let grad_input = match accum_for(*input) {
                    Some(accum) => quote!(#some((io.grad_input, #accum))),
                    None => quote!(#none),
                };
                let all = slice(&(in_weight.start..out_bias.end));
                let (len_wi, len_bi, len_wo) = (in_weight.len(), in_bias.len(), out_weight.len());
                let (wi, wo) = (slice(in_weight), slice(out_weight));
                quote! {
                    {
                        let io = ws.backward_io(#input, #output, #some(#aux));
                        let (grad_in_weight, rest) = grads[#all].split_at_mut(#len_wi);
                        let (grad_in_bias, rest) = rest.split_at_mut(#len_bi);
                        let (grad_out_weight, grad_out_bias) = rest.split_at_mut(#len_wo);
                        #layers::attention_backward::<T>(
                            #shape, #grad_input, grad_in_weight, grad_in_bias, grad_out_weight,
                            grad_out_bias, io.aux, io.input, &params[#wi], &params[#wo],
                            io.grad_output, batch,
                        );
                    }
                }
            }
            Step::TakeLast {
                input,
                output,
                steps,
                width,
            } => {
                let accum = accum_for(*input).unwrap_or_else(|| replace.clone());
                quote! {
                    {
                        let io = ws.backward_io(#input, #output, #none);
                        #layers::last_step_backward::<T>(io.grad_input, #accum, io.grad_output, #steps, #width, batch);
                    }
                }
            }
            Step::Activation { act, input, output } => {
                let act = activation(Some(*act));
                let accum = accum_for(*input).unwrap_or_else(|| replace.clone());
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
                let accum = accum_for(*input).unwrap_or_else(|| replace.clone());
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
                let accum = accum_for(*input).unwrap_or_else(|| replace.clone());
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
        // The step's parameters are read by nothing later in the pass: with an update
        // in force, make it now, while the gradients are fresh. (Dense layers made it
        // inside their kernel.)
        if !matches!(step, Step::Dense { .. }) {
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
    let uses_params = plan.steps.iter().any(Step::has_params);
    let batch = plan
        .steps
        .iter()
        .any(|s| s.uses_batch() && needed[s.output()])
        .then(|| quote!(let batch = ws.batch();));
    let (params, grads, ws, update) = if uses_params {
        (quote!(params), quote!(grads), quote!(ws), quote!(update))
    } else {
        (
            quote!(_params),
            quote!(_grads),
            quote!(_ws),
            quote!(_update),
        )
    };
    quote! {
        fn backward_pass(
            #params: &mut [T],
            #grads: &mut [T],
            #ws: &mut ::kiln::__private::Pass<'_, T>,
            #update: ::core::option::Option<T>,
        ) {
            #batch
            #(#blocks)*
        }
    }
}

/// `let (grad_weight, grad_bias) = ..` over the contiguous weight and bias gradients,
/// and the `Option` of the bias gradient to pass on.
fn split_grads(
    weight: &std::ops::Range<usize>,
    bias: &Option<std::ops::Range<usize>>,
) -> (TokenStream, TokenStream) {
    split_weight_bias(
        quote!(grads),
        quote!(grad_weight),
        quote!(grad_bias),
        weight,
        bias,
    )
}

/// `let (weight, bias) = ..` over the contiguous weight and bias parameters, and the
/// `Option` of the bias to pass on.
fn split_params(
    weight: &std::ops::Range<usize>,
    bias: &Option<std::ops::Range<usize>>,
) -> (TokenStream, TokenStream) {
    split_weight_bias(quote!(params), quote!(weight), quote!(bias), weight, bias)
}

/// `let (w, b) = buffer[..].split_at_mut(..)` (or `let w = &mut buffer[..]` without a
/// bias) and `Some(b)` or `None`.
fn split_weight_bias(
    buffer: TokenStream,
    w: TokenStream,
    b: TokenStream,
    weight: &std::ops::Range<usize>,
    bias: &Option<std::ops::Range<usize>>,
) -> (TokenStream, TokenStream) {
    match bias {
        Some(bias) => {
            let (split, all) = (weight.len(), slice(&(weight.start..bias.end)));
            (
                quote!(let (#w, #b) = #buffer[#all].split_at_mut(#split);),
                quote!(::core::option::Option::Some(#b)),
            )
        }
        None => {
            let range = slice(weight);
            (
                quote!(let #w = &mut #buffer[#range];),
                quote!(::core::option::Option::None),
            )
        }
    }
}
