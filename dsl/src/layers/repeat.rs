//! `Repeat(n) { .. }`: the block's layers `n` times in sequence, each repetition with
//! its own parameters, named `name.0`, `name.1`, … as PyTorch names the blocks of an
//! `nn.Sequential` stage (torchvision's ResNet: `layer1.0.conv1.weight`). Each
//! repetition is checked on the shape the one before it gives, so the first may
//! change the shape and the others keep it.

use super::activation::Act;
use super::sequential::sequence;
use super::{arg, ArgKind, Call, CheckFn, Checked, LayerSpec, Op, Scoping};
use crate::check::{Checker, Layer};
use crate::codegen::Plan;

pub const SPECS: &[LayerSpec] = &[LayerSpec {
    name: "Repeat",
    args: &[arg("count", ArgKind::Int, true)],
    block: true,
    usage: "`Repeat(3) { Dense(64), Relu }`",
    computes: true,
    reads_tokens: false,
    scoped: Scoping::Always,
    check: check as CheckFn,
}];

struct Repeat(Vec<Layer>);

/// The most repetitions a `Repeat` takes: each is checked and generated in full, so a
/// larger count is a typo that would only make the compiler crawl.
const MAX_REPEAT: usize = 4096;

/// Rule: a block is repeated at least once.
fn check(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let name = &call.name;
    let count = call.int(0);
    if count == 0 {
        checker.push(
            call.arg_span(0),
            format!("{name}: `Repeat` needs a count of at least 1"),
        );
        return None;
    }
    // Rule: at most MAX_REPEAT repetitions (each is checked and generated in full).
    if count > MAX_REPEAT {
        checker.push(
            call.arg_span(0),
            format!("{name}: `Repeat` takes at most {MAX_REPEAT} repetitions, got {count}"),
        );
        return None;
    }
    let block = call.item.block.as_ref()?;
    let mut repetitions = Vec::new();
    let mut shape = call.input.clone();
    for index in 0..count {
        let full = format!("{name}.{index}");
        let mut inner = Vec::new();
        let input = shape.clone();
        shape = checker.nested(&full, |checker| {
            checker.items(&block.items, input.clone(), &mut inner)
        });
        let (Some(input), Some(output)) = (input, shape.clone()) else {
            // One report of each mistake: the later repetitions would repeat it.
            return None;
        };
        repetitions.push(Layer {
            name: full,
            display: "Sequential".to_string(),
            op: sequence(inner),
            input,
            output,
        });
    }
    Some((Box::new(Repeat(repetitions)), shape?))
}

impl Op for Repeat {
    fn flops(&self, _: &Layer) -> u64 {
        0
    }

    fn children(&self) -> &[Layer] {
        &self.0
    }

    fn computes(&self) -> bool {
        self.0.iter().any(|layer| layer.op.computes())
    }

    fn plan(&self, _: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        plan.layers(&self.0, input)
    }
}
