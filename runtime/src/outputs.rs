//! Models with several named inputs and outputs (`inputs: { .. }` and
//! `outputs: { .. }` in `model!`).
//!
//! Such a model packs its inputs into one input vector per sample and its outputs into
//! one output vector per sample, each in the order it declares them, so that
//! everything that trains, evaluates, checkpoints and shards a model with one input
//! works for it unchanged: its `Model::Input` is `Shape1<sum of the inputs' sizes>`,
//! its `Model::Output` `Shape1<sum of the outputs' sizes>`. The macro generates the
//! typed side around that:
//!
//! - `<Model>Inputs { a, b, .. }` and `<Model>Outputs { x, y, .. }`, structs with a
//!   field per input and output, generic over what each holds;
//! - `Model::pack_inputs` and `Model::dataset` build the packed data from one buffer
//!   per input and per output ([`pack_inputs`], [`pack_targets`]), checking that they
//!   agree on the number of samples (a typed [`Error::Mismatch`] naming the culprit
//!   otherwise);
//! - `<Model>Outputs` of losses is itself a [`Loss`]: the sum of each output's loss
//!   on its part of the output and targets ([`outputs_loss`]), weighted with
//!   [`Weighted`](crate::loss::Weighted) (`Mse::default().weight(0.2)`);
//! - `Model::evaluate_outputs` scores each output on a dataset
//!   ([`train::evaluate_outputs`](crate::train::evaluate_outputs)), as Keras reports a
//!   loss and an accuracy per output;
//! - `Model::infer_outputs` runs a batch given as named inputs and returns named
//!   slices of the model's workspace, allocating nothing after the first batch of a
//!   size.
//!
//! A sample's targets are the outputs' targets one after the other, each as many as
//! its loss takes ([`Loss::targets_per_row`] per row: one label for
//! [`CrossEntropy`](crate::CrossEntropy), one value per output value otherwise).
//! Every output's loss takes targets of one type (`usize` labels, or `f32`/`f64`
//! values; a classifier among outputs of values takes one-hot rows or probabilities,
//! [`CategoricalCrossEntropy`](crate::loss::CategoricalCrossEntropy)).
//!
//! ```
//! use kiln::prelude::*;
//! kiln::model! {
//!     struct Heads {
//!         inputs: { image: [4], meta: [1] },
//!         h: Concat(image, meta) >> { Dense(8), Relu },
//!         outputs: { kind: h >> Dense(3), size: h >> Dense(1) },
//!     }
//! }
//! let mut model = Heads::<f32>::new(0);
//! let outputs = model.infer_outputs(HeadsInputs { image: &[0.5; 8], meta: &[1.0, 2.0] })?;
//! assert_eq!((outputs.kind.len(), outputs.size.len()), (2 * 3, 2 * 1));
//! # Ok::<(), kiln::Error>(())
//! ```

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;

use crate::data::Target;
use crate::loss::{Loss, OutputLayout, OutputScore};
use crate::model::SEALED;
use crate::{Error, Float, Model, Result};

/// One named input or output of a model.
///
/// ```
/// use kiln_runtime::outputs::Port;
/// // Two outputs of each sample: a 3-class head, then one regression value.
/// let ports = [
///     Port { name: "kind", size: 3, width: 3, shape: &[3], node: 5 },
///     Port { name: "size", size: 1, width: 1, shape: &[1], node: 6 },
/// ];
/// let per_sample: usize = ports.iter().map(|p| p.size).sum();
/// assert_eq!(per_sample, 4); // the packed output's values a sample
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    /// Its name in the model (`click`).
    pub name: &'static str,
    /// Values per sample.
    pub size: usize,
    /// The last axis of its shape (the classes of a classifier's output).
    pub width: usize,
    /// Its shape per sample.
    pub shape: &'static [usize],
    /// The workspace node that holds it.
    pub node: usize,
}

/// The loss of a model with several outputs: `losses[k]` on output `k`'s values (each
/// sample's `ports[k].size` values at its offset in the packed `output`) against its
/// targets (each sample's share of `target`, in output order), summed. `grad_output`
/// receives each output's gradient at its place. Unless `scores` is empty, output `k`'s
/// loss (times the batch and `weight`) and, for class labels, its correct and counted
/// predictions are added to `scores[k]`: what `fit` reports per output.
///
/// The outputs' values and targets are gathered into per-thread buffers, which grow
/// once and are reused: no allocation after the first batch of a size.
///
/// # Errors
/// [`Error::TargetLength`] if the targets are not the outputs' targets for
/// `layout.batch` samples; [`Error::Mismatch`] if the losses mix reductions (mean and
/// sum, which gradient accumulation could not combine) or `scores` is neither empty
/// nor one per output; any output's loss error.
///
/// ```
/// use kiln_runtime::outputs::Port;
/// // Two outputs of each sample: a 3-class head, then one regression value.
/// let ports = [
///     Port { name: "kind", size: 3, width: 3, shape: &[3], node: 5 },
///     Port { name: "size", size: 1, width: 1, shape: &[1], node: 6 },
/// ];
/// use kiln_runtime::loss::{Loss, OutputLayout};
/// use kiln_runtime::outputs::outputs_loss;
/// use kiln_runtime::{Mse, Reduction};
/// // Both outputs' losses as values (targets of one type): a sample's 3 + 1 targets.
/// let losses: [&dyn Loss<f64, Target = [f64]>; 2] = [&Mse::default(), &Mse::default()];
/// let output = [1.0, 0.0, 0.0, 2.0, /* second sample */ 0.0, 1.0, 0.0, 4.0];
/// let target = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0];
/// let layout = OutputLayout { batch: 2, width: 4 };
/// let mut grad = [0.0; 8];
/// let total = outputs_loss(&ports, &losses, &output, &target, layout, Some(&mut grad), 1.0, &mut [])?;
/// assert_eq!(total, (1.0 + 9.0) / 2.0); // the kinds are right; sizes off by 1 and 3
/// assert_eq!(grad[3], 2.0 * 1.0 / 2.0); // d/dy of the size's mean squared error
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn outputs_loss<T: Float, Y: Target>(
    ports: &[Port],
    losses: &[&dyn Loss<T, Target = [Y]>],
    output: &[T],
    target: &[Y],
    layout: OutputLayout,
    mut grad_output: Option<&mut [T]>,
    weight: f64,
    scores: &mut [OutputScore],
) -> Result<T> {
    let reduction = losses[0].reduction();
    if losses.iter().any(|l| l.reduction() != reduction) {
        return Err(Error::Mismatch(
            "the losses of a model's outputs must share one reduction (all mean or all sum)".into(),
        ));
    }
    if !scores.is_empty() && scores.len() != ports.len() {
        return Err(Error::Mismatch(format!(
            "{} scores for {} outputs",
            scores.len(),
            ports.len()
        )));
    }
    let mut grads = take::<T>(GRADS);
    let mut total = T::ZERO;
    let (stride, _) = strides(ports, losses);
    let batch = layout.batch;
    let result = each_part(ports, losses, output, target, layout, |part| {
        let grad = grad_output.is_some().then(|| {
            grads.clear();
            grads.resize(part.values.len(), T::ZERO);
            &mut grads[..]
        });
        let value = part
            .loss
            .evaluate(part.values, part.targets, part.layout, grad)?;
        total += value;
        if let Some(grad_output) = grad_output.as_deref_mut() {
            let (offset, size) = (part.offset, part.port.size);
            for (row, g) in grad_output
                .chunks_exact_mut(stride)
                .zip(grads.chunks_exact(size))
            {
                row[offset..offset + size].copy_from_slice(g);
            }
        }
        if let Some(score) = scores.get_mut(part.index) {
            score.loss += value.to_f64() * batch as f64 * weight;
            let width = part.port.width;
            let labels = Y::correct(part.values, part.targets, width)
                .filter(|_| part.loss.targets_per_row(width) == 1);
            if let Some((c, n)) = labels.or_else(|| {
                let layout = OutputLayout {
                    batch: part.layout.batch,
                    width,
                };
                part.loss.correct(part.values, part.targets, layout)
            }) {
                score.correct += c as f64;
                score.counted += n as f64;
            }
        }
        Ok(())
    });
    keep(GRADS, grads);
    result.map(|()| total)
}

/// One output's part of a batch, as [`each_part`] gives it.
struct Part<'a, T, Y> {
    index: usize,
    port: &'a Port,
    loss: &'a dyn Loss<T, Target = [Y]>,
    /// Where the output starts in each sample of the packed output.
    offset: usize,
    values: &'a [T],
    targets: &'a [Y],
    layout: OutputLayout,
}

/// Calls `f` on each output's part of a batch of packed outputs and targets: its
/// values and targets gathered into per-thread buffers (which grow once), and its
/// layout.
///
/// # Errors
/// [`Error::Mismatch`] if `output` is not `layout.batch` samples of the outputs,
/// [`Error::TargetLength`] if `target` is not their targets; what `f` returns.
fn each_part<T: Float, Y: Copy + 'static>(
    ports: &[Port],
    losses: &[&dyn Loss<T, Target = [Y]>],
    output: &[T],
    target: &[Y],
    layout: OutputLayout,
    mut f: impl FnMut(Part<'_, T, Y>) -> Result<()>,
) -> Result<()> {
    let batch = layout.batch;
    let (stride, targets) = strides(ports, losses);
    if output.len() != batch * stride {
        return Err(Error::Mismatch(format!(
            "{} output values for {batch} samples of {stride} (the outputs together)",
            output.len()
        )));
    }
    if target.len() != batch * targets {
        return Err(Error::TargetLength {
            expected: batch * targets,
            actual: target.len(),
        });
    }
    let (mut values, mut part_targets) = (take::<T>(VALUES), take::<Y>(TARGETS));
    let (mut offset, mut target_offset) = (0, 0);
    let mut result = Ok(());
    for (index, (port, &loss)) in ports.iter().zip(losses).enumerate() {
        let count = loss.targets_per_row(port.width) * (port.size / port.width);
        gather(&mut values, output, batch, stride, offset, port.size);
        gather(
            &mut part_targets,
            target,
            batch,
            targets,
            target_offset,
            count,
        );
        result = f(Part {
            index,
            port,
            loss,
            offset,
            values: &values,
            targets: &part_targets,
            layout: OutputLayout {
                batch,
                width: port.width,
            },
        });
        if result.is_err() {
            break;
        }
        offset += port.size;
        target_offset += count;
    }
    keep(VALUES, values);
    keep(TARGETS, part_targets);
    result
}

/// Packs one buffer per input (each `n · size` values, sample after sample) into the
/// model's input: each sample's inputs one after the other, in `ports` order. Returns
/// the number of samples.
///
/// ```
/// use kiln_runtime::outputs::{pack_inputs, Port};
/// let ports = [
///     Port { name: "image", size: 3, width: 3, shape: &[3], node: 1 },
///     Port { name: "meta", size: 1, width: 1, shape: &[1], node: 2 },
/// ];
/// let mut packed = Vec::new();
/// let n = pack_inputs(&ports, &[&[1, 2, 3, 4, 5, 6], &[7, 8]], &mut packed).unwrap();
/// assert_eq!((n, packed), (2, vec![1, 2, 3, 7, 4, 5, 6, 8]));
/// assert!(pack_inputs(&ports, &[&[1, 2, 3], &[7, 8]], &mut Vec::new()).is_err());
/// ```
///
/// # Errors
/// [`Error::Mismatch`] naming an input whose length is not a whole, non-zero number of
/// its samples, or two inputs with different numbers of samples.
pub fn pack_inputs<T: Copy>(ports: &[Port], parts: &[&[T]], packed: &mut Vec<T>) -> Result<usize> {
    let mut n = None;
    for (port, part) in ports.iter().zip(parts) {
        if part.is_empty() || part.len() % port.size != 0 {
            return Err(Error::Mismatch(format!(
                "input `{}` has {} values: not a whole number of samples of {} values",
                port.name,
                part.len(),
                port.size
            )));
        }
        let samples = part.len() / port.size;
        match n {
            None => n = Some((port.name, samples)),
            Some((first, m)) if m != samples => {
                return Err(Error::Mismatch(format!(
                    "inputs disagree on the number of samples: `{first}` has {m} but `{}` has {samples}",
                    port.name
                )))
            }
            Some(_) => {}
        }
    }
    let (_, n) = n.expect("a model has at least one input");
    interleave(parts, |k| ports[k].size, n, packed);
    Ok(n)
}

/// Packs one buffer of targets per output into a dataset's targets: each sample's
/// targets of every output, in `names` order, for `n` samples.
///
/// ```
/// use kiln_runtime::outputs::pack_targets;
/// let mut packed = Vec::new();
/// // Two samples: one label each for `digit`, two values each for `box`.
/// pack_targets(&["digit", "box"], &[&[3.0, 7.0], &[0.1, 0.2, 0.3, 0.4]], 2, &mut packed).unwrap();
/// assert_eq!(packed, [3.0, 0.1, 0.2, 7.0, 0.3, 0.4]);
/// ```
///
/// # Errors
/// [`Error::Mismatch`] naming an output whose targets are not a whole, non-zero number
/// per sample.
pub fn pack_targets<Y: Copy>(
    names: &[&str],
    parts: &[&[Y]],
    n: usize,
    packed: &mut Vec<Y>,
) -> Result<()> {
    let mut sizes = Vec::with_capacity(parts.len());
    for (name, part) in names.iter().zip(parts) {
        if n == 0 || part.is_empty() || part.len() % n != 0 {
            return Err(Error::Mismatch(format!(
                "output `{name}` has {} targets for {n} samples: expected a whole number per sample",
                part.len()
            )));
        }
        sizes.push(part.len() / n);
    }
    interleave(parts, |k| sizes[k], n, packed);
    Ok(())
}

/// Runs `f` on a per-thread buffer that packs a batch's inputs, kept for the next
/// call so that serving allocates nothing after its first batch of a size.
///
/// ```
/// use kiln_runtime::outputs::with_packed;
/// let len = with_packed(|buffer: &mut Vec<f32>| {
///     buffer.clear();
///     buffer.extend_from_slice(&[1.0, 2.0, 3.0]);
///     buffer.len()
/// });
/// assert_eq!(len, 3);
/// // The next call on this thread gets the same buffer back, its capacity kept.
/// assert!(with_packed(|buffer: &mut Vec<f32>| buffer.capacity()) >= 3);
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn with_packed<T: Copy + 'static, R>(f: impl FnOnce(&mut Vec<T>) -> R) -> R {
    let mut packed = take::<T>(PACKED);
    let result = f(&mut packed);
    keep(PACKED, packed);
    result
}

/// The values of node `node` (an output's, from the model's `SPEC`) that `model`'s last
/// forward pass left in its workspace, for the whole batch: how a graph model's
/// `infer_outputs` reads each output without copying it.
///
/// ```
/// # use kiln::prelude::*;
/// kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
/// let mut net = Net::<f32>::new(0);
/// let served = net.infer(TensorRef::<f32, Shape1<3>>::new(&[1.0, 2.0, 3.0])?).to_vec();
/// assert_eq!(kiln::outputs::node_values(&net, Net::<f32>::SPEC.output_node), served);
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn node_values<T: Float, M: Model<T>>(model: &M, node: usize) -> &[T] {
    model.state(SEALED).node_values(node)
}

/// Values per sample of the packed output and of the packed targets.
fn strides<T: Float, Y>(ports: &[Port], losses: &[&dyn Loss<T, Target = [Y]>]) -> (usize, usize) {
    ports
        .iter()
        .zip(losses)
        .fold((0, 0), |(values, targets), (port, loss)| {
            let rows = port.size / port.width;
            (
                values + port.size,
                targets + loss.targets_per_row(port.width) * rows,
            )
        })
}

/// `dst` = values `offset..offset + len` of each of `batch` rows of `stride` in `src`.
fn gather<V: Copy>(
    dst: &mut Vec<V>,
    src: &[V],
    batch: usize,
    stride: usize,
    offset: usize,
    len: usize,
) {
    dst.clear();
    for row in src.chunks_exact(stride).take(batch) {
        dst.extend_from_slice(&row[offset..offset + len]);
    }
}

/// Sample `s` of the result is sample `s` of each part (`size(k)` values for part
/// `k`) in turn.
fn interleave<V: Copy>(parts: &[&[V]], size: impl Fn(usize) -> usize, n: usize, out: &mut Vec<V>) {
    out.clear();
    out.reserve(n * (0..parts.len()).map(&size).sum::<usize>());
    for s in 0..n {
        for (k, part) in parts.iter().enumerate() {
            let size = size(k);
            out.extend_from_slice(&part[s * size..(s + 1) * size]);
        }
    }
}

/// The per-thread buffers: an output's values, its gradient, its targets, and a batch
/// of packed inputs.
const VALUES: u8 = 0;
const GRADS: u8 = 1;
const TARGETS: u8 = 2;
const PACKED: u8 = 3;

thread_local! {
    /// Per-thread buffers by element type and slot, which grow once.
    static SCRATCH: RefCell<HashMap<(TypeId, u8), Box<dyn Any>>> = RefCell::new(HashMap::new());
}

/// The buffer of `slot` for `V`, taken out (empty the first time).
fn take<V: 'static>(slot: u8) -> Vec<V> {
    SCRATCH.with(|scratch| {
        scratch
            .borrow_mut()
            .get_mut(&(TypeId::of::<V>(), slot))
            .and_then(|held| held.downcast_mut::<Vec<V>>())
            .map(std::mem::take)
            .unwrap_or_default()
    })
}

/// Puts a buffer taken with [`take`] back.
fn keep<V: 'static>(slot: u8, buffer: Vec<V>) {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        match scratch
            .get_mut(&(TypeId::of::<V>(), slot))
            .and_then(|held| held.downcast_mut::<Vec<V>>())
        {
            Some(held) => *held = buffer,
            None => {
                scratch.insert((TypeId::of::<V>(), slot), Box::new(buffer));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::{CrossEntropy, Mse};

    const PORTS: [Port; 2] = [
        Port {
            name: "digit",
            size: 3,
            width: 3,
            shape: &[3],
            node: 0,
        },
        Port {
            name: "value",
            size: 2,
            width: 2,
            shape: &[2],
            node: 0,
        },
    ];

    #[test]
    fn the_loss_of_outputs_is_the_sum_of_each_outputs_loss_on_its_part() {
        // Two samples of [3 logits, 2 logits]; targets [label, label] per sample.
        let output = [0.1, 0.5, -0.2, 1.0, 2.0, 0.3, -0.4, 0.9, -1.0, 0.5];
        let (first, second) = ([0.1, 0.5, -0.2, 0.3, -0.4, 0.9], [1.0, 2.0, -1.0, 0.5]);
        let layout = |width| OutputLayout { batch: 2, width };
        let (ce, half) = (CrossEntropy::default(), CrossEntropy::default().weight(0.5));
        let (mut g1, mut g2) = ([0.0; 6], [0.0; 4]);
        let a = ce
            .evaluate(&first, &[2, 0], layout(3), Some(&mut g1))
            .unwrap();
        let b = half
            .evaluate(&second, &[1, 0], layout(2), Some(&mut g2))
            .unwrap();
        let losses: [&dyn Loss<f64, Target = [usize]>; 2] = [&ce, &half];
        let mut grad = [0.0; 10];
        let targets = [2, 1, 0, 0];
        let mut scores = [OutputScore::default(); 2];
        let total = outputs_loss(
            &PORTS,
            &losses,
            &output,
            &targets,
            layout(5),
            Some(&mut grad),
            2.0,
            &mut scores,
        )
        .unwrap();
        assert!((total - (a + b)).abs() < 1e-15);
        // Each output's loss times the batch and the weight, and its right labels:
        // sample 0's digit logits peak at 1 (label 2), sample 1's at 2 (label 0).
        assert!((scores[0].loss - a * 2.0 * 2.0).abs() < 1e-12);
        assert!((scores[1].loss - b * 2.0 * 2.0).abs() < 1e-12);
        assert_eq!((scores[0].correct, scores[0].counted), (0.0, 2.0));
        assert_eq!((scores[1].correct, scores[1].counted), (1.0, 2.0));
        // Scores of the wrong length are an error.
        let wrong = outputs_loss(
            &PORTS,
            &losses,
            &output,
            &targets,
            layout(5),
            None,
            1.0,
            &mut [OutputScore::default()],
        );
        assert!(matches!(wrong, Err(Error::Mismatch(_))));
        assert_eq!(&grad[..3], &g1[..3]);
        assert_eq!(&grad[3..5], &g2[..2]);
        assert_eq!(&grad[5..8], &g1[3..]);
        assert_eq!(&grad[8..], &g2[2..]);
        // Element-wise losses take a value per output value.
        let mse = Mse::default();
        let losses: [&dyn Loss<f64, Target = [f64]>; 2] = [&mse, &mse.weight(2.0)];
        let targets = [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 2.0, 0.0];
        let all = outputs_loss(
            &PORTS,
            &losses,
            &output,
            &targets,
            layout(5),
            None,
            1.0,
            &mut [],
        )
        .unwrap();
        let t1 = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let t2 = [0.0, 1.0, 2.0, 0.0];
        let c = mse.evaluate(&first, &t1, layout(3), None).unwrap();
        let d = mse.evaluate(&second, &t2, layout(2), None).unwrap();
        assert!((all - (c + 2.0 * d)).abs() < 1e-15);
    }

    #[test]
    fn misfitting_targets_and_mixed_reductions_are_errors() {
        let output = [0.0; 10];
        let layout = OutputLayout { batch: 2, width: 5 };
        let losses: [&dyn Loss<f64, Target = [f64]>; 2] = [&Mse::default(), &Mse::default()];
        let short = outputs_loss(
            &PORTS,
            &losses,
            &output,
            &[0.0; 9],
            layout,
            None,
            1.0,
            &mut [],
        );
        assert!(matches!(
            short,
            Err(Error::TargetLength {
                expected: 10,
                actual: 9
            })
        ));
        let sum = Mse {
            reduction: crate::Reduction::Sum,
        };
        let mixed: [&dyn Loss<f64, Target = [f64]>; 2] = [&Mse::default(), &sum];
        let err = outputs_loss(
            &PORTS,
            &mixed,
            &output,
            &[0.0; 10],
            layout,
            None,
            1.0,
            &mut [],
        );
        assert!(matches!(err, Err(Error::Mismatch(_))));
    }

    #[test]
    fn packing_interleaves_samples_and_names_the_input_that_disagrees() {
        let mut packed = Vec::new();
        let n = pack_inputs(&PORTS, &[&[1, 2, 3, 4, 5, 6], &[7, 8, 9, 10]], &mut packed).unwrap();
        assert_eq!(n, 2);
        assert_eq!(packed, [1, 2, 3, 7, 8, 4, 5, 6, 9, 10]);
        let err = pack_inputs(&PORTS, &[&[1, 2, 3, 4, 5, 6], &[7, 8]], &mut packed).unwrap_err();
        assert!(
            err.to_string().contains("`digit` has 2 but `value` has 1"),
            "{err}"
        );
        let err = pack_inputs(&PORTS, &[&[1, 2, 3, 4], &[7, 8]], &mut packed).unwrap_err();
        assert!(
            err.to_string().contains("input `digit` has 4 values"),
            "{err}"
        );
        pack_targets(&["a", "b"], &[&[1, 2], &[3, 4, 5, 6]], 2, &mut packed).unwrap();
        assert_eq!(packed, [1, 3, 4, 2, 5, 6]);
        let err = pack_targets(&["a", "b"], &[&[1, 2], &[3, 4, 5]], 2, &mut packed).unwrap_err();
        assert!(
            err.to_string().contains("output `b` has 3 targets"),
            "{err}"
        );
    }

    #[test]
    fn scratch_buffers_are_reused() {
        let mut first = take::<f32>(9);
        first.reserve(64);
        let ptr = first.as_ptr();
        keep(9, first);
        let again = take::<f32>(9);
        assert_eq!(again.as_ptr(), ptr);
        keep(9, again);
    }
}
