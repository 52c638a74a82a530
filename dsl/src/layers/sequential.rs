//! `Sequential { .. }` (written `name: { .. }` as a branch): its layers in order, as
//! PyTorch's `nn.Sequential`. Names nest under the block's (`b1.conv`), and unnamed
//! layers take their position (`b1.0.weight`), so a PyTorch branch's state dict keys
//! match. An empty sequence is the identity.

use super::activation::Act;
use super::{Call, CheckFn, Checked, LayerSpec, Op, Scoping};
use crate::check::{Checker, Layer};
use crate::codegen::Plan;

pub const SPECS: &[LayerSpec] = &[LayerSpec {
    name: "Sequential",
    args: &[],
    block: true,
    usage: "`Sequential { Conv2d(8, kernel = 1), Relu }`, or as a branch `b1: { .. }`",
    computes: true,
    reads_tokens: false,
    scoped: Scoping::Always,
    check: check as CheckFn,
}];

struct Sequential(Vec<Layer>);

/// A checked sequence of layers, as a block that holds others builds it.
pub fn sequence(layers: Vec<Layer>) -> Box<dyn Op> {
    Box::new(Sequential(layers))
}

fn check(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let block = call.item.block.as_ref()?;
    let mut inner = Vec::new();
    let output = checker.nested(&call.name, |checker| {
        checker.items(&block.items, call.input.clone(), &mut inner)
    })?;
    Some((Box::new(Sequential(inner)), output))
}

impl Op for Sequential {
    fn flops(&self, _: &Layer) -> u64 {
        0
    }

    fn children(&self) -> &[Layer] {
        &self.0
    }

    fn computes(&self) -> bool {
        self.0.iter().any(|layer| layer.op.computes())
    }

    fn sequence(&self) -> Option<&[Layer]> {
        Some(&self.0)
    }

    fn plan(&self, _: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        plan.layers(&self.0, input)
    }
}
