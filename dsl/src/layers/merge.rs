//! Branch-and-merge blocks: `Concat { a: { .. }, b: { .. } }`, `Add { .. }` and
//! `Mul { .. }`. Every branch reads the block's input; the block's output is the
//! branches' outputs concatenated (along channels for `[C, H, W]`, along features for
//! `[features]` and `[steps, features]`), summed or multiplied element-wise. A branch is
//! one layer or a sequence `name: { .. }`; `{}` is the identity. Names nest as PyTorch
//! nests modules: `mixed.b1.0.weight`.

use proc_macro2::TokenStream;
use quote::quote;

use super::activation::{activation, Act};
use super::onnx::{attr_int, ints, node, temp, value_node, with_activation, StepShapes};
use super::{size, Call, CheckFn, Checked, GradFlow, LayerSpec, Op, Scoping, Step};
use crate::check::{dims, Checker, Layer};
use crate::codegen::Plan;

const fn merge(name: &'static str, usage: &'static str) -> LayerSpec {
    LayerSpec {
        name,
        args: &[],
        block: true,
        usage,
        computes: true,
        reads_tokens: false,
        scoped: Scoping::Always,
        check: check as CheckFn,
    }
}

pub const SPECS: &[LayerSpec] = &[
    merge(
        "Concat",
        "`Concat { a: { Conv2d(8, kernel = 1) }, b: { Conv2d(8, kernel = 3, padding = 1) } }`",
    ),
    merge(
        "Add",
        "`Add { main: { Dense(64), Relu, Dense(64) }, skip: {} }`",
    ),
    merge(
        "Mul",
        "`Mul { value: { Dense(64) }, gate: { Dense(64), Sigmoid } }`",
    ),
];

/// How branches (or a graph's nodes) merge.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    Concat,
    Sum,
    Product,
}

impl Merge {
    /// The merge the DSL calls `kind` (`Concat`, `Add`, `Mul`).
    pub fn from_kind(kind: &str) -> Option<Merge> {
        match kind {
            "Concat" => Some(Merge::Concat),
            "Add" => Some(Merge::Sum),
            "Mul" => Some(Merge::Product),
            _ => None,
        }
    }
}

/// The shape of `shapes` merged. Rules: summed or multiplied shapes are one shape;
/// concatenated ones have one rank and agree on every axis but the merged one (the
/// features of `[steps, features]`, else the first axis). Otherwise the position of
/// the first shape that breaks the rule and what it disagrees on.
pub fn merged_shape(
    merge: Merge,
    shapes: &[Vec<usize>],
) -> Result<Vec<usize>, (usize, &'static str)> {
    let first = &shapes[0];
    if merge != Merge::Concat {
        return match shapes.iter().position(|o| o != first) {
            Some(position) => Err((position, "their shape")),
            None => Ok(first.clone()),
        };
    }
    // Rank 2 is [steps, features], merged along features; others along the first
    // axis (channels of [C, H, W], or the features of a vector).
    let axis = if first.len() == 2 { 1 } else { 0 };
    let what = match first.len() {
        2 => "steps",
        3 => "[H, W]",
        _ => "the axes after the first",
    };
    for (position, out) in shapes.iter().enumerate().skip(1) {
        if out.len() != first.len() {
            return Err((position, "rank"));
        }
        let rest = |shape: &[usize]| -> Vec<usize> {
            let mut shape = shape.to_vec();
            shape.remove(axis);
            shape
        };
        if rest(out) != rest(first) {
            return Err((position, what));
        }
    }
    let mut output = first.clone();
    output[axis] = shapes.iter().map(|o| o[axis]).sum();
    Ok(output)
}

/// Pushes the step that merges nodes `inputs` (of `shapes`) into a new node of
/// `output`'s shape, a sum with the activation `fused` after it; returns that node.
pub fn push_merge(
    plan: &mut Plan,
    merge: Merge,
    inputs: Vec<usize>,
    shapes: &[Vec<usize>],
    output: &[usize],
    fused: Option<Act>,
) -> usize {
    debug_assert!(fused.is_none() || merge == Merge::Sum);
    let node = plan.node(size(output));
    // Rows of the merged layout: a step of [steps, features], else a whole sample.
    let steps = if output.len() == 2 && merge == Merge::Concat {
        output[0]
    } else {
        1
    };
    let widths = shapes.iter().map(|shape| size(shape) / steps).collect();
    plan.push(MergeStep {
        merge,
        inputs,
        output: node,
        widths,
        steps,
        fused,
    });
    node
}

struct Block {
    merge: Merge,
    branches: Vec<Layer>,
}

/// A branch as the user calls it in messages: its name, or its position.
fn branch_name(call: &Call, position: usize) -> String {
    let items = &call.item.block.as_ref().expect("a merge has a block").items;
    items[position]
        .name
        .as_ref()
        .map_or_else(|| position.to_string(), |n| n.to_string())
}

/// Rules: a merge has at least two branches; a sum's or product's branches give one
/// shape; a concatenation's give one rank and agree on every axis but the merged one.
fn check(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let name = &call.name;
    let kind = call.spec.name;
    let merge = Merge::from_kind(kind).unwrap_or(Merge::Product);
    let block = call.item.block.as_ref()?;
    let mut branches = Vec::new();
    let mut outputs = Vec::new();
    checker.nested(name, |checker| {
        for (position, entry) in block.items.iter().enumerate() {
            outputs.push(checker.item(entry, position, call.input.clone(), &mut branches));
        }
    });
    if block.items.len() < 2 {
        checker.push(
            block.span,
            format!(
                "{name}: `{kind}` needs at least two branches: {}",
                call.spec.usage
            ),
        );
        return None;
    }
    let outputs: Vec<Vec<usize>> = outputs.into_iter().collect::<Option<_>>()?;
    call.input.as_ref()?;
    let output = match merged_shape(merge, &outputs) {
        Ok(output) => output,
        Err((other, what)) => {
            checker.push(
                block.items[other].span(),
                format!(
                    "{name}: branches disagree on {what}: {} gives {} but {} gives {}",
                    branch_name(call, 0),
                    dims(&outputs[0]),
                    branch_name(call, other),
                    dims(&outputs[other])
                ),
            );
            return None;
        }
    };
    Some((Box::new(Block { merge, branches }), output))
}

impl Op for Block {
    fn flops(&self, layer: &Layer) -> u64 {
        match self.merge {
            Merge::Concat => 0,
            Merge::Sum | Merge::Product => ((self.branches.len() - 1) * size(&layer.output)) as u64,
        }
    }

    fn children(&self) -> &[Layer] {
        &self.branches
    }

    /// A sum applies a following activation as it adds its last term.
    fn takes_activation(&self) -> bool {
        self.merge == Merge::Sum
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, fused: Option<Act>) -> usize {
        let inputs: Vec<usize> = self
            .branches
            .iter()
            .map(|branch| plan.layers(std::slice::from_ref(branch), input))
            .collect();
        let shapes: Vec<Vec<usize>> = self.branches.iter().map(|b| b.output.clone()).collect();
        push_merge(plan, self.merge, inputs, &shapes, &layer.output, fused)
    }
}

struct MergeStep {
    merge: Merge,
    inputs: Vec<usize>,
    output: usize,
    /// Values of each branch per row.
    widths: Vec<usize>,
    /// Rows per sample.
    steps: usize,
    /// The activation fused after a sum.
    fused: Option<Act>,
}

impl MergeStep {
    fn rows(&self) -> TokenStream {
        let steps = self.steps;
        if steps == 1 {
            quote!(batch)
        } else {
            quote!(batch * #steps)
        }
    }
}

impl Step for MergeStep {
    fn inputs(&self) -> Vec<usize> {
        self.inputs.clone()
    }

    fn output(&self) -> usize {
        self.output
    }

    fn uses_batch(&self) -> bool {
        self.merge == Merge::Concat
    }

    fn onnx(&self, shapes: &StepShapes) -> Option<Vec<TokenStream>> {
        let out = self.output;
        let mut nodes = Vec::new();
        let mut parts = Vec::new();
        for (k, (&input, &width)) in self.inputs.iter().zip(&self.widths).enumerate() {
            // Concatenated per row of `width` values; summed or multiplied whole.
            let shape: Vec<i64> = match self.merge {
                Merge::Concat if self.steps == 1 => vec![-1, width as i64],
                Merge::Concat => vec![-1, self.steps as i64, width as i64],
                Merge::Sum | Merge::Product => std::iter::once(-1)
                    .chain(shapes.output.iter().map(|&d| d as i64))
                    .collect(),
            };
            let part = temp(out, u8::try_from(k).ok()?);
            nodes.push(node(
                "Reshape",
                &[value_node(input), ints(&shape)],
                part.clone(),
                &[],
            ));
            parts.push(part);
        }
        match self.merge {
            Merge::Concat => nodes.push(node(
                "Concat",
                &parts,
                value_node(out),
                &[attr_int("axis", -1)],
            )),
            // Past the parts' temporaries (and the product's, from 100).
            Merge::Sum => nodes.extend(with_activation(
                |to| node("Sum", &parts, to, &[]),
                self.fused,
                out,
                200,
            )),
            Merge::Product if parts.len() == 1 => {
                nodes.push(node("Identity", &parts, value_node(out), &[]))
            }
            Merge::Product => {
                let mut product = parts[0].clone();
                for (k, part) in parts.iter().enumerate().skip(1) {
                    let to = if k + 1 == parts.len() {
                        value_node(out)
                    } else {
                        temp(out, u8::try_from(100 + k).ok()?)
                    };
                    nodes.push(node("Mul", &[product, part.clone()], to.clone(), &[]));
                    product = to;
                }
            }
        }
        Some(nodes)
    }

    fn forward(&self) -> TokenStream {
        let (inputs, output, n) = (&self.inputs, self.output, self.inputs.len());
        let layers = quote!(::kiln::__private::layers);
        let call = match self.merge {
            Merge::Concat => {
                let (widths, rows) = (&self.widths, self.rows());
                quote!(#layers::concat_forward::<T, #n>(output, inputs, [#(#widths),*], #rows);)
            }
            Merge::Sum => {
                let act = activation(self.fused);
                quote!(#layers::sum_forward::<T, #n>(output, inputs, #act);)
            }
            Merge::Product => quote!(#layers::product_forward::<T, #n>(output, inputs);),
        };
        quote! {
            {
                let (inputs, output) = ws.merge_io([#(#inputs),*], #output);
                #call
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let (inputs, output, n) = (&self.inputs, self.output, self.inputs.len());
        let layers = quote!(::kiln::__private::layers);
        let total: usize = self.widths.iter().sum();
        let mut offset = 0;
        let mut blocks = Vec::new();
        if let Some(act) = self.fused {
            // The gradient at the sum, in place, before any term reads it.
            let act = activation(Some(act));
            blocks.push(quote! {
                {
                    let (output, grad_output) = ws.value_and_grad(#output);
                    #layers::sum_activation_backward::<T>(grad_output, output, #act);
                }
            });
        }
        for (which, &node) in inputs.iter().enumerate() {
            let width = self.widths[which];
            let at = offset;
            offset += width;
            let Some(accum) = flow.accum(node) else {
                continue;
            };
            let call = match self.merge {
                Merge::Concat => quote! {
                    #layers::concat_backward::<T>(io.grad_input, #accum, io.grad_output, #at, #total);
                },
                Merge::Sum => quote! {
                    #layers::sum_backward::<T>(io.grad_input, #accum, io.grad_output);
                },
                Merge::Product => quote! {
                    #layers::product_backward::<T, #n>(io.grad_input, #accum, io.inputs, #which, io.grad_output);
                },
            };
            let block = quote! {
                {
                    let io = ws.merge_grad_io([#(#inputs),*], #output, #which);
                    #call
                }
            };
            blocks.push(if flow.always[node] {
                block
            } else {
                quote!(if to_input { #block })
            });
        }
        quote!(#(#blocks)*)
    }
}
