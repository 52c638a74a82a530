//! `Rnn(hidden)`, `Lstm(hidden)` and `Gru(hidden)` over `[steps, features]` (PyTorch's
//! single-layer `nn.RNN`/`nn.LSTM`/`nn.GRU` with `batch_first`, parameters
//! `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`), and `LastStep`, which
//! keeps the last row of `[steps, features]`.

use std::ops::Range;

use kiln_shapes::{Cell, RecurrentShape};
use proc_macro2::TokenStream;
use quote::quote;

use super::activation::Act;
use super::onnx::{
    attr_int, attr_ints, ints, node, param, reshape_input, temp, value_node, StepShapes,
};
use super::{arg, layer, size, slice, ArgKind, Call, Checked, GradFlow, LayerSpec, Op, Step};
use crate::check::{dims, Checker, Layer};
use crate::codegen::{InitPlan, Plan};

pub const SPECS: &[LayerSpec] = &[
    layer(
        "Rnn",
        &[arg("hidden", ArgKind::Int, true)],
        "`Rnn(64)`",
        check,
    ),
    layer(
        "Lstm",
        &[arg("hidden", ArgKind::Int, true)],
        "`Lstm(128)`",
        check,
    ),
    layer(
        "Gru",
        &[arg("hidden", ArgKind::Int, true)],
        "`Gru(64)`",
        check,
    ),
    layer("LastStep", &[], "`LastStep`", check_last_step),
];

struct Recurrent {
    cell: Cell,
    hidden: usize,
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
    Some((Box::new(Recurrent { cell, hidden }), vec![input[0], hidden]))
}

impl Recurrent {
    /// The runtime's geometry of the layer, whose sizes the plan uses.
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
        let width = self.shape(layer).width();
        width * (layer.input[1] + self.hidden + 2)
    }

    fn flops(&self, layer: &Layer) -> u64 {
        let (steps, features) = (layer.input[0], layer.input[1]);
        let width = self.shape(layer).width();
        (steps * (2 * width * (features + self.hidden) + 4 * width)) as u64
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let name = &layer.name;
        let (steps, features, hidden) = (layer.input[0], layer.input[1], self.hidden);
        let shape = self.shape(layer);
        let width = shape.width();
        let fan_in = InitPlan::FanIn(hidden);
        let weight_ih = plan.param(
            format!("{name}.weight_ih_l0"),
            vec![width, features],
            fan_in,
            true,
        );
        let weight_hh = plan.param(
            format!("{name}.weight_hh_l0"),
            vec![width, hidden],
            fan_in,
            true,
        );
        let bias_ih = plan.param(format!("{name}.bias_ih_l0"), vec![width], fan_in, false);
        let bias_hh = plan.param(format!("{name}.bias_hh_l0"), vec![width], fan_in, false);
        let output = plan.node(size(&layer.output));
        let aux = plan.node(shape.aux_len());
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
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
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
    weight_ih: Range<usize>,
    weight_hh: Range<usize>,
    bias_ih: Range<usize>,
    bias_hh: Range<usize>,
}

impl RecurrentStep {
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
        vec![
            self.weight_ih.clone(),
            self.weight_hh.clone(),
            self.bias_ih.clone(),
            self.bias_hh.clone(),
        ]
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
        let mut next = 1u8;
        let mut fresh = || {
            next += 1;
            temp(out, next)
        };
        // `[gates · hidden, …]` with its blocks reordered, then a leading axis of 1.
        let mut reorder = |start: usize, nodes: &mut Vec<TokenStream>| {
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
        let w = reorder(self.weight_ih.start, &mut nodes);
        let r = reorder(self.weight_hh.start, &mut nodes);
        let (bw, br) = (
            reorder(self.bias_ih.start, &mut nodes),
            reorder(self.bias_hh.start, &mut nodes),
        );
        let b = fresh();
        nodes.push(node("Concat", &[bw, br], b.clone(), &[attr_int("axis", 0)]));
        // Sequence-major, as ONNX Runtime runs only `layout = 0`: X [steps, batch, in].
        let x = fresh();
        let perm = [attr_ints("perm", &[1, 0, 2])];
        nodes.push(node("Transpose", &[temp(out, 0)], x.clone(), &perm));
        let mut inputs = vec![x];
        for value in [w, r, b] {
            let lifted = fresh();
            nodes.push(node("Unsqueeze", &[value, ints(&[0])], lifted.clone(), &[]));
            inputs.push(lifted);
        }
        let mut attrs = vec![attr_int("hidden_size", hidden as i64)];
        if self.cell == Cell::Gru {
            attrs.push(attr_int("linear_before_reset", 1));
        }
        // Y: [steps, directions, batch, hidden], to [batch, steps, hidden].
        let (y, batch_major) = (fresh(), fresh());
        nodes.push(node(op, &inputs, y.clone(), &attrs));
        let perm = [attr_ints("perm", &[2, 0, 1, 3])];
        nodes.push(node("Transpose", &[y], batch_major.clone(), &perm));
        let shape = [-1, self.steps as i64, hidden as i64];
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
        let (wi, wh, bi, bh) = (
            slice(&self.weight_ih),
            slice(&self.weight_hh),
            slice(&self.bias_ih),
            slice(&self.bias_hh),
        );
        let scratch = slice(&self.scratch);
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
            weight_ih,
            weight_hh,
            bias_ih,
            ..
        } = self;
        let shape = self.shape();
        let grad_input = flow.optional(*input, quote!(io.grad_input));
        // The four tensors are contiguous: weight_ih, weight_hh, bias_ih, bias_hh.
        let all = slice(
            &(weight_ih.start
                ..weight_ih.start + weight_ih.len() + weight_hh.len() + 2 * bias_ih.len()),
        );
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
                    grad_bias_hh, io.aux, io.input, io.output, &params[#wi], &params[#wh],
                    io.grad_output, batch,
                );
            }
        }
    }
}

struct LastStep;

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
    Some((Box::new(LastStep), vec![input[1]]))
}

impl Op for LastStep {
    fn flops(&self, _: &Layer) -> u64 {
        0
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let output = plan.node(size(&layer.output));
        plan.push(LastStepStep {
            input,
            output,
            steps: layer.input[0],
            width: layer.input[1],
        });
        output
    }
}

struct LastStepStep {
    input: usize,
    output: usize,
    steps: usize,
    width: usize,
}

impl Step for LastStepStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn onnx(&self, _: &StepShapes) -> Option<Vec<TokenStream>> {
        let (out, last) = (self.output, self.steps as i64 - 1);
        let inputs = [temp(out, 0), ints(&[last]), ints(&[last + 1]), ints(&[1])];
        Some(vec![
            reshape_input(self.input, out, &[self.steps, self.width]),
            node("Slice", &inputs, temp(out, 1), &[]),
            node(
                "Reshape",
                &[temp(out, 1), ints(&[-1, self.width as i64])],
                value_node(out),
                &[],
            ),
        ])
    }

    fn forward(&self) -> TokenStream {
        let LastStepStep {
            input,
            output,
            steps,
            width,
        } = self;
        quote! {
            {
                let io = ws.forward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::last_step_forward::<T>(io.output, io.input, #steps, #width, batch);
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let LastStepStep {
            input,
            output,
            steps,
            width,
        } = self;
        let accum = flow.accum_or_replace(*input);
        quote! {
            {
                let io = ws.backward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::last_step_backward::<T>(io.grad_input, #accum, io.grad_output, #steps, #width, batch);
            }
        }
    }
}
