//! `Residual { .. }`: `y = x + f(x)` for a block `f` that preserves its input's shape.
//! A following activation whose derivative is a function of its output (the `Relu`
//! that ends a ResNet's basic block) is fused into the sum.
//!
//! Named (`res: Residual { fc: Dense(64) }`), it is a module: its layers' names nest
//! under its own (`res.fc.weight`). Unnamed, it is a connection written in the forward
//! pass of the module around it, as torchvision's `BasicBlock` adds its input: its
//! layers are named in the enclosing scope, unnamed ones numbered on from the
//! enclosing sequence's positions.

use proc_macro2::TokenStream;
use quote::quote;

use super::activation::{activation, Act};
use super::onnx::{ints, node, temp, value_node, with_activation, StepShapes};
use super::{size, Call, CheckFn, Checked, GradFlow, LayerSpec, Op, Scoping, Step};
use crate::check::{dims, renames_only, Checker, Layer};
use crate::codegen::Plan;

pub const SPECS: &[LayerSpec] = &[LayerSpec {
    name: "Residual",
    args: &[],
    block: true,
    usage: "`Residual { Dense(64), Relu }`",
    computes: true,
    reads_tokens: false,
    scoped: Scoping::WhenNamed,
    check: check as CheckFn,
}];

struct Residual(Vec<Layer>);

/// Rule: a residual block is non-empty and preserves its input's shape.
fn check(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let name = &call.name;
    let block = call.item.block.as_ref()?;
    let mut inner = Vec::new();
    let inner_out = if call.spec.scoped.nests(call.item) {
        checker.nested(name, |checker| {
            checker.items(&block.items, call.input.clone(), &mut inner)
        })
    } else {
        checker.items(&block.items, call.input.clone(), &mut inner)
    };
    if block.items.is_empty() || renames_only(&block.items).is_some() {
        checker.push(
            block.span,
            format!("{name}: a residual block needs at least one layer that computes something"),
        );
        return None;
    }
    let (input, output) = (call.input.as_ref()?, inner_out?);
    if *input != output {
        checker.push(
            call.span(),
            format!(
                "{name}: a residual block must preserve its shape, but it turns {} into {}",
                dims(input),
                dims(&output)
            ),
        );
        if let Some((culprit, layer)) = block
            .items
            .iter()
            .zip(&inner)
            .find(|(_, l)| l.output != *input)
        {
            checker.push(
                culprit.span(),
                format!(
                    "{}: this layer changes {} into {}",
                    layer.name,
                    dims(&layer.input),
                    dims(&layer.output)
                ),
            );
        }
        return None;
    }
    Some((Box::new(Residual(inner)), output))
}

impl Op for Residual {
    fn flops(&self, layer: &Layer) -> u64 {
        size(&layer.output) as u64
    }

    fn children(&self) -> &[Layer] {
        &self.0
    }

    fn takes_activation(&self) -> bool {
        true
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, fused: Option<Act>) -> usize {
        let inner = plan.layers(&self.0, input);
        let output = plan.node(size(&layer.output));
        plan.push(ResidualStep {
            input,
            inner,
            output,
            fused,
        });
        output
    }
}

struct ResidualStep {
    input: usize,
    inner: usize,
    output: usize,
    /// The activation fused after the sum.
    fused: Option<Act>,
}

impl Step for ResidualStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input, self.inner]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn uses_batch(&self) -> bool {
        false
    }

    fn onnx(&self, shapes: &StepShapes) -> Option<Vec<TokenStream>> {
        let out = self.output;
        let shape: Vec<i64> = std::iter::once(-1)
            .chain(shapes.output.iter().map(|&d| d as i64))
            .collect();
        let operands = [temp(out, 0), temp(out, 1)];
        let mut nodes = vec![
            node(
                "Reshape",
                &[value_node(self.input), ints(&shape)],
                temp(out, 0),
                &[],
            ),
            node(
                "Reshape",
                &[value_node(self.inner), ints(&shape)],
                temp(out, 1),
                &[],
            ),
        ];
        nodes.extend(with_activation(
            |to| node("Add", &operands, to, &[]),
            self.fused,
            out,
            2,
        ));
        Some(nodes)
    }

    fn forward(&self) -> TokenStream {
        let ResidualStep {
            input,
            inner,
            output,
            ..
        } = self;
        let act = activation(self.fused);
        quote! {
            {
                let (input, inner, output) = ws.forward_io2(#input, #inner, #output);
                ::kiln::__private::layers::sum_forward::<T, 2>(output, [input, inner], #act);
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let ResidualStep {
            input,
            inner,
            output,
            ..
        } = self;
        let act = activation(self.fused);
        // The block's output gradient is the sum's, written; then the skip's.
        let _ = flow.accum(*inner);
        let grad_input = flow.optional(*input, quote!(grad_input));
        quote! {
            {
                let ([grad_input, grad_inner, grad_output], output) =
                    ws.residual_grad_io(#input, #inner, #output);
                ::kiln::__private::layers::residual_backward(
                    #grad_input, grad_inner, output, grad_output, #act,
                );
            }
        }
    }
}
