//! `Rnn(hidden)`, `Lstm(hidden)` and `Gru(hidden)` over `[steps, features]` (PyTorch's
//! single-layer `nn.RNN`/`nn.LSTM`/`nn.GRU` with `batch_first`, parameters
//! `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`), with
//! `bidirectional = true` a second direction over the reversed steps (parameters
//! suffixed `_reverse`, output `[steps, 2 · hidden]`); `LastStep`, which keeps the last
//! row of `[steps, features]`; and `Transpose`, which swaps the two axes of a sample.

use std::ops::Range;

use kiln_shapes::{Cell, RecurrentShape};
use proc_macro2::TokenStream;
use quote::quote;

use super::activation::Act;
use super::onnx::{
    attr_int, attr_ints, attr_str, ints, node, param, reshape_input, temp, value_node, StepShapes,
};
use super::{arg, layer, size, slice, ArgKind, Call, Checked, GradFlow, LayerSpec, Op, Step};
use crate::check::{dims, Checker, Layer};
use crate::codegen::{InitPlan, Plan};

pub const SPECS: &[LayerSpec] = &[
    layer(
        "Rnn",
        &[
            arg("hidden", ArgKind::Int, true),
            arg("bidirectional", ArgKind::Bool, false),
        ],
        "`Rnn(64)`",
        check,
    ),
    layer(
        "Lstm",
        &[
            arg("hidden", ArgKind::Int, true),
            arg("bidirectional", ArgKind::Bool, false),
        ],
        "`Lstm(128)` or `Lstm(64, bidirectional = true)`",
        check,
    ),
    layer(
        "Gru",
        &[
            arg("hidden", ArgKind::Int, true),
            arg("bidirectional", ArgKind::Bool, false),
        ],
        "`Gru(64)`",
        check,
    ),
    layer("LastStep", &[], "`LastStep`", check_last_step),
    layer("Transpose", &[], "`Transpose`", check_transpose),
];

struct Recurrent {
    cell: Cell,
    hidden: usize,
    bidirectional: bool,
}

fn check(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let name = &call.name;
    let hidden = call.int(0);
    if hidden == 0 {
        checker.push(
            call.arg_span(0),
            format!("{name}: a recurrent layer needs at least 1 hidden unit"),
        );
        return None;
    }
    let cell = match call.spec.name {
        "Rnn" => Cell::Rnn,
        "Lstm" => Cell::Lstm,
        _ => Cell::Gru,
    };
    let input = call.input.as_ref()?;
    // Rule: a recurrent layer runs over [steps, features].
    if input.len() != 2 {
        let hint = checker.vector_hint(input).unwrap_or_default();
        checker.push(
            call.span(),
            format!(
                "{name}: {} expects [steps, features] but gets {}{hint}",
                call.spec.name,
                dims(input)
            ),
        );
        return None;
    }
    let bidirectional = call.flag(1, false);
    let width = if bidirectional { 2 * hidden } else { hidden };
    Some((
        Box::new(Recurrent {
            cell,
            hidden,
            bidirectional,
        }),
        vec![input[0], width],
    ))
}

impl Recurrent {
    fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// The runtime's geometry of the layer (of each direction), whose sizes the plan
    /// uses.
    fn shape(&self, layer: &Layer) -> RecurrentShape {
        RecurrentShape {
            cell: self.cell,
            steps: layer.input[0],
            features: layer.input[1],
            hidden: self.hidden,
        }
    }
}

impl Op for Recurrent {
    fn params(&self, layer: &Layer) -> usize {
        self.directions() * self.shape(layer).params_len()
    }

    fn flops(&self, layer: &Layer) -> u64 {
        let (steps, features) = (layer.input[0], layer.input[1]);
        let width = self.shape(layer).width();
        (self.directions() * steps * (2 * width * (features + self.hidden) + 4 * width)) as u64
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let name = &layer.name;
        let (steps, features, hidden) = (layer.input[0], layer.input[1], self.hidden);
        let shape = self.shape(layer);
        let width = shape.width();
        let fan_in = InitPlan::FanIn(hidden);
        // PyTorch's order: the forward direction's four tensors, then the reverse's.
        let mut direction = |suffix: &str| {
            let weight_ih = plan.param(
                format!("{name}.weight_ih_l0{suffix}"),
                vec![width, features],
                fan_in,
                true,
            );
            let weight_hh = plan.param(
                format!("{name}.weight_hh_l0{suffix}"),
                vec![width, hidden],
                fan_in,
                true,
            );
            let bias_ih = plan.param(
                format!("{name}.bias_ih_l0{suffix}"),
                vec![width],
                fan_in,
                false,
            );
            let bias_hh = plan.param(
                format!("{name}.bias_hh_l0{suffix}"),
                vec![width],
                fan_in,
                false,
            );
            [weight_ih, weight_hh, bias_ih, bias_hh]
        };
        let forward = direction("");
        let reverse = self.bidirectional.then(|| direction("_reverse"));
        let output = plan.node(size(&layer.output));
        let aux = plan.node(if self.bidirectional {
            shape.bidirectional_aux_len()
        } else {
            shape.aux_len()
        });
        let scratch = plan.fixed(shape.scratch_len());
        plan.push(RecurrentStep {
            input,
            output,
            aux,
            scratch,
            cell: self.cell,
            steps,
            features,
            hidden,
            forward,
            reverse,
        });
        output
    }
}

struct RecurrentStep {
    input: usize,
    output: usize,
    aux: usize,
    scratch: Range<usize>,
    cell: Cell,
    steps: usize,
    features: usize,
    hidden: usize,
    /// `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`, contiguous.
    forward: [Range<usize>; 4],
    /// The same for the reverse direction of a bidirectional layer, right after.
    reverse: Option<[Range<usize>; 4]>,
}

impl RecurrentStep {
    /// Every parameter of the layer, one contiguous range.
    fn all(&self) -> Range<usize> {
        let last = self.reverse.as_ref().unwrap_or(&self.forward);
        self.forward[0].start..last[3].end
    }

    fn shape(&self) -> TokenStream {
        let (steps, features, hidden) = (self.steps, self.features, self.hidden);
        let cell = match self.cell {
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
}

impl Step for RecurrentStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn param_ranges(&self) -> Vec<Range<usize>> {
        self.forward
            .iter()
            .chain(self.reverse.iter().flatten())
            .cloned()
            .collect()
    }

    fn onnx(&self, _: &StepShapes) -> Option<Vec<TokenStream>> {
        let (out, hidden) = (self.output, self.hidden);
        // PyTorch's gate blocks in ONNX's order: LSTM i f g o → i o f c, GRU r z n →
        // z r h; a plain RNN has one block.
        let (op, order): (&str, &[usize]) = match self.cell {
            Cell::Rnn => ("RNN", &[0]),
            Cell::Lstm => ("LSTM", &[0, 3, 1, 2]),
            Cell::Gru => ("GRU", &[1, 0, 2]),
        };
        let mut nodes = vec![reshape_input(self.input, out, &[self.steps, self.features])];
        let next = std::cell::Cell::new(1u8);
        let fresh = || {
            next.set(next.get() + 1);
            temp(out, next.get())
        };
        // `[gates · hidden, …]` with its blocks reordered.
        let reorder = |start: usize, nodes: &mut Vec<TokenStream>| {
            let blocks: Vec<TokenStream> = order
                .iter()
                .map(|&g| {
                    let block = fresh();
                    let (from, to) = ((g * hidden) as i64, ((g + 1) * hidden) as i64);
                    let inputs = [param(start), ints(&[from]), ints(&[to]), ints(&[0])];
                    nodes.push(node("Slice", &inputs, block.clone(), &[]));
                    block
                })
                .collect();
            let joined = fresh();
            nodes.push(node(
                "Concat",
                &blocks,
                joined.clone(),
                &[attr_int("axis", 0)],
            ));
            joined
        };
        // Each direction's W, R and B (both biases), with a leading axis of 1.
        let direction = |[wi, wh, bi, bh]: &[Range<usize>; 4], nodes: &mut Vec<TokenStream>| {
            let w = reorder(wi.start, nodes);
            let r = reorder(wh.start, nodes);
            let (bw, br) = (reorder(bi.start, nodes), reorder(bh.start, nodes));
            let b = fresh();
            nodes.push(node("Concat", &[bw, br], b.clone(), &[attr_int("axis", 0)]));
            [w, r, b].map(|value| {
                let lifted = fresh();
                nodes.push(node("Unsqueeze", &[value, ints(&[0])], lifted.clone(), &[]));
                lifted
            })
        };
        let mut wrb = direction(&self.forward, &mut nodes);
        if let Some(reverse) = &self.reverse {
            // Stacked along the directions axis: forward, then reverse.
            for (both, r) in wrb.iter_mut().zip(direction(reverse, &mut nodes)) {
                let stacked = fresh();
                let inputs = [both.clone(), r];
                nodes.push(node(
                    "Concat",
                    &inputs,
                    stacked.clone(),
                    &[attr_int("axis", 0)],
                ));
                *both = stacked;
            }
        }
        // Sequence-major, as ONNX Runtime runs only `layout = 0`: X [steps, batch, in].
        let x = fresh();
        let perm = [attr_ints("perm", &[1, 0, 2])];
        nodes.push(node("Transpose", &[temp(out, 0)], x.clone(), &perm));
        let mut inputs = vec![x];
        inputs.extend(wrb);
        let mut attrs = vec![attr_int("hidden_size", hidden as i64)];
        if self.cell == Cell::Gru {
            attrs.push(attr_int("linear_before_reset", 1));
        }
        if self.reverse.is_some() {
            attrs.push(attr_str("direction", "bidirectional"));
        }
        // Y: [steps, directions, batch, hidden], to [batch, steps, directions · hidden].
        let (y, batch_major) = (fresh(), fresh());
        nodes.push(node(op, &inputs, y.clone(), &attrs));
        let perm = [attr_ints("perm", &[2, 0, 1, 3])];
        nodes.push(node("Transpose", &[y], batch_major.clone(), &perm));
        let directions = 1 + usize::from(self.reverse.is_some());
        let shape = [-1, self.steps as i64, (directions * hidden) as i64];
        nodes.push(node(
            "Reshape",
            &[batch_major, ints(&shape)],
            value_node(out),
            &[],
        ));
        Some(nodes)
    }

    fn forward(&self) -> TokenStream {
        let RecurrentStep {
            input, output, aux, ..
        } = self;
        let shape = self.shape();
        let scratch = slice(&self.scratch);
        if self.reverse.is_some() {
            let all = slice(&self.all());
            return quote! {
                {
                    let io = ws.forward_io(#input, #output, ::core::option::Option::Some(#aux));
                    ::kiln::__private::layers::bidirectional_forward::<T>(
                        #shape, io.output, io.aux, &mut io.fixed[#scratch], io.input,
                        &params[#all], batch,
                    );
                }
            };
        }
        let [wi, wh, bi, bh] = self.forward.each_ref().map(slice);
        quote! {
            {
                let io = ws.forward_io(#input, #output, ::core::option::Option::Some(#aux));
                ::kiln::__private::layers::recurrent_forward::<T>(
                    #shape, io.output, io.aux, &mut io.fixed[#scratch], io.input,
                    &params[#wi], &params[#wh], &params[#bi], &params[#bh], batch,
                );
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let RecurrentStep {
            input,
            output,
            aux,
            forward: [weight_ih, weight_hh, bias_ih, _],
            ..
        } = self;
        let shape = self.shape();
        let scratch = slice(&self.scratch);
        let grad_input = flow.optional(*input, quote!(io.grad_input));
        // The tensors are contiguous: weight_ih, weight_hh, bias_ih, bias_hh (and the
        // reverse direction's four after them).
        let all = slice(&self.all());
        if self.reverse.is_some() {
            return quote! {
                {
                    let io = ws.backward_io(#input, #output, ::core::option::Option::Some(#aux));
                    ::kiln::__private::layers::bidirectional_backward::<T>(
                        #shape, #grad_input, &mut grads[#all], io.aux, &mut io.fixed[#scratch],
                        io.input, &params[#all], io.grad_output, batch,
                    );
                }
            };
        }
        let (len_wi, len_wh, len_b) = (weight_ih.len(), weight_hh.len(), bias_ih.len());
        let (wi, wh) = (slice(weight_ih), slice(weight_hh));
        quote! {
            {
                let io = ws.backward_io(#input, #output, ::core::option::Option::Some(#aux));
                let (grad_weight_ih, rest) = grads[#all].split_at_mut(#len_wi);
                let (grad_weight_hh, rest) = rest.split_at_mut(#len_wh);
                let (grad_bias_ih, grad_bias_hh) = rest.split_at_mut(#len_b);
                ::kiln::__private::layers::recurrent_backward::<T>(
                    #shape, #grad_input, grad_weight_ih, grad_weight_hh, grad_bias_ih,
                    grad_bias_hh, io.aux, &mut io.fixed[#scratch], io.input, io.output,
                    &params[#wi], &params[#wh], io.grad_output, batch,
                );
            }
        }
    }
}

/// `LastStep` and `Transpose`: layers that move the rows of a `[rows, cols]` sample.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// `[steps, width]` to `[width]`: the last step.
    LastStep,
    /// `[rows, cols]` to `[cols, rows]`.
    Transpose,
}

fn check_last_step(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let input = call.input.as_ref()?;
    // Rule: LastStep keeps the last row of [steps, features].
    if input.len() != 2 {
        checker.push(
            call.span(),
            format!(
                "{}: LastStep expects [steps, features] but gets {}",
                call.name,
                dims(input)
            ),
        );
        return None;
    }
    Some((Box::new(Rows::LastStep), vec![input[1]]))
}

fn check_transpose(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let input = call.input.as_ref()?;
    // Rule: Transpose swaps the two axes of a [rows, cols] sample.
    if input.len() != 2 {
        checker.push(
            call.span(),
            format!(
                "{}: Transpose swaps the two axes of [steps, features] or [channels, length] but gets {}",
                call.name,
                dims(input)
            ),
        );
        return None;
    }
    Some((Box::new(Rows::Transpose), vec![input[1], input[0]]))
}

impl Op for Rows {
    fn flops(&self, _: &Layer) -> u64 {
        0
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let output = plan.node(size(&layer.output));
        plan.push(RowsStep {
            kind: *self,
            input,
            output,
            rows: layer.input[0],
            cols: layer.input[1],
        });
        output
    }
}

struct RowsStep {
    kind: Rows,
    input: usize,
    output: usize,
    rows: usize,
    cols: usize,
}

impl Step for RowsStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn onnx(&self, _: &StepShapes) -> Option<Vec<TokenStream>> {
        let out = self.output;
        let mut nodes = vec![reshape_input(self.input, out, &[self.rows, self.cols])];
        match self.kind {
            Rows::LastStep => {
                let last = self.rows as i64 - 1;
                let inputs = [temp(out, 0), ints(&[last]), ints(&[last + 1]), ints(&[1])];
                nodes.push(node("Slice", &inputs, temp(out, 1), &[]));
                let shape = ints(&[-1, self.cols as i64]);
                nodes.push(node(
                    "Reshape",
                    &[temp(out, 1), shape],
                    value_node(out),
                    &[],
                ));
            }
            Rows::Transpose => {
                let perm = [attr_ints("perm", &[0, 2, 1])];
                nodes.push(node("Transpose", &[temp(out, 0)], value_node(out), &perm));
            }
        }
        Some(nodes)
    }

    fn forward(&self) -> TokenStream {
        let RowsStep {
            input,
            output,
            rows,
            cols,
            ..
        } = self;
        let kernel = match self.kind {
            Rows::LastStep => quote!(last_step_forward),
            Rows::Transpose => quote!(transpose_forward),
        };
        quote! {
            {
                let io = ws.forward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::#kernel::<T>(io.output, io.input, #rows, #cols, batch);
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let RowsStep {
            input,
            output,
            rows,
            cols,
            ..
        } = self;
        let accum = flow.accum_or_replace(*input);
        let kernel = match self.kind {
            Rows::LastStep => quote!(last_step_backward),
            Rows::Transpose => quote!(transpose_backward),
        };
        quote! {
            {
                let io = ws.backward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::#kernel::<T>(io.grad_input, #accum, io.grad_output, #rows, #cols, batch);
            }
        }
    }
}
