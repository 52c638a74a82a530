//! `Flatten`: `[d0, d1, ..]` to `[d0 · d1 · ..]`. The batch-major layout already
//! holds a sample's values in that order, so it only renames the shape: no node, no
//! kernel.

use super::activation::Act;
use super::{size, Call, CheckFn, Checked, LayerSpec, Op, Scoping};
use crate::check::{Checker, Layer};
use crate::codegen::Plan;

pub const SPECS: &[LayerSpec] = &[LayerSpec {
    name: "Flatten",
    args: &[],
    block: false,
    usage: "`Flatten`",
    computes: false,
    reads_tokens: false,
    scoped: Scoping::Never,
    check: check as CheckFn,
}];

struct Flatten;

fn check(_: &mut Checker, call: &Call) -> Option<Checked> {
    let input = call.input.as_ref()?;
    Some((Box::new(Flatten), vec![size(input)]))
}

impl Op for Flatten {
    fn flops(&self, _: &Layer) -> u64 {
        0
    }

    fn computes(&self) -> bool {
        false
    }

    fn plan(&self, _: &Layer, _: &mut Plan, input: usize, _: Option<Act>) -> usize {
        input
    }
}
