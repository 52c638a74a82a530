//! What every generated model is: the [`Model`] trait, its tables and its buffers.
//!
//! `model!` generates a struct holding a [`ModelState`] and implements [`Model`] for it
//! with two generated functions, the forward and the backward pass, as straight-line
//! calls into [`layers`](crate::layers) with const dimensions. Everything else — the
//! training step, inference, the summary, parameter access — is written once, here.
//!
//! # Buffers
//! - Parameters live in one contiguous buffer, in the order of [`ModelSpec::params`]
//!   (PyTorch's names, layouts and order); gradients live in a second buffer of the same
//!   layout. An optimiser step is one pass over both; saving is one copy.
//! - The [`Workspace`] holds every intermediate value of a training forward pass (node
//!   0 is a copy of the input) and, beside it, the gradient of each. It grows to the
//!   largest batch seen and is reused: after the first step at a batch size, a training
//!   step allocates nothing.

use core::fmt;
use core::ops::Range;
use std::borrow::Cow;

use crate::aligned::AlignedVec;
use crate::init::{dropout_rng, init_rng, Init};
use crate::layers::Maxima;
use crate::loss::{Loss, OutputLayout, Reduction, Regularization};
use crate::optim::{GradClip, Optimizer};
use crate::train::ResumeState;
use crate::{Error, Float, Result, Rng, Shape, Tensor, TensorRef};

/// One parameter tensor of a model.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
/// let weight = Net::<f32>::SPEC.param("fc.weight").unwrap();
/// assert_eq!((weight.shape, weight.offset, weight.len), (&[4, 3][..], 0, 12));
/// assert!(weight.regularized && !Net::<f32>::SPEC.param("fc.bias").unwrap().regularized);
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamInfo {
    /// PyTorch's name, such as `fc1.weight`; for a tensor of a user layer (see
    /// [`crate::custom`]), its name under the layer (`weight`), which
    /// [`scope`](Self::scope) precedes. [`full_name`](Self::full_name) joins the two.
    pub name: &'static str,
    /// The user layer the tensor belongs to (`gate`, `block.gate`), or empty.
    pub scope: &'static str,
    /// PyTorch's shape, such as `[128, 784]`.
    pub shape: &'static [usize],
    /// First index in the parameter buffer.
    pub offset: usize,
    /// Number of values.
    pub len: usize,
    /// How it starts.
    pub init: Init,
    /// Whether L1/L2 regularisation applies (weights yes, biases no).
    pub regularized: bool,
    /// How the tensor is stored in a file.
    pub kind: TensorKind,
}

/// How a parameter or buffer tensor is stored in a saved file.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
/// kiln::model! { struct Normed { input: [3], bn: BatchNorm1d, out: Dense(2) } }
/// let tracked = Normed::<f32>::SPEC.buffer("bn.num_batches_tracked").unwrap();
/// assert_eq!(tracked.kind, kiln::TensorKind::Count); // saved as an I64 scalar, as PyTorch
/// assert_eq!(Normed::<f32>::SPEC.buffer("bn.running_mean").unwrap().kind, kiln::TensorKind::Float);
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// Floats of the model's element type.
    Float,
    /// A count kept as one value in the model and saved as a scalar I64, as PyTorch
    /// saves batch norm's `num_batches_tracked`.
    Count,
}

impl ParamInfo {
    /// Its range in the parameter buffer.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// let net = Net::<f32>::new(0);
    /// let bias = Net::<f32>::SPEC.param("out.bias").unwrap();
    /// assert_eq!(&net.params().as_slice()[bias.range()], net.params().get("out.bias").unwrap());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub const fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }

    /// Its name in a saved file, `scope.name`.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// kiln::model! { struct Outer { input: [3], inner: use Net -> [2], head: Dense(1) } }
    /// let names: Vec<_> = Outer::<f32>::SPEC.params.iter().map(|p| p.full_name()).collect();
    /// // A layer written outside the macro (here a model) keeps its tensors after the others.
    /// assert_eq!(names, ["head.weight", "head.bias", "inner.fc.weight", "inner.fc.bias", "inner.out.weight", "inner.out.bias"]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn full_name(&self) -> Cow<'static, str> {
        if self.scope.is_empty() {
            Cow::Borrowed(self.name)
        } else {
            Cow::Owned(format!("{}.{}", self.scope, self.name))
        }
    }

    /// Whether its full name is `name`, without building it.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// kiln::model! { struct Outer { input: [3], inner: use Net -> [2], head: Dense(1) } }
    /// let nested = &Outer::<f32>::SPEC.params[2]; // `fc.weight` in the scope `inner`
    /// assert!(nested.is_named("inner.fc.weight") && !nested.is_named("fc.weight"));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn is_named(&self, name: &str) -> bool {
        if self.scope.is_empty() {
            return self.name == name;
        }
        name.strip_prefix(self.scope)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| rest == self.name)
    }
}

/// One row of a model's layer table.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
/// let fc = &Net::<f32>::SPEC.layers[0];
/// assert_eq!((fc.name, fc.kind, fc.output, fc.params), ("fc", "Dense(4)", &[4][..], 16));
/// assert_eq!(fc.flops, 2 * 3 * 4 + 4); // multiply-adds and the bias
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    /// The layer's name (`fc1`) or its generated one (`relu_0`).
    pub name: &'static str,
    /// What it is, as written in the model (`Dense(128)`).
    pub kind: &'static str,
    /// Per-sample output shape.
    pub output: &'static [usize],
    /// Parameter count.
    pub params: usize,
    /// Floating-point operations per sample in the forward pass (a multiply-add is 2).
    pub flops: u64,
    /// How many blocks the layer is nested in (0 at the top): a block's row comes
    /// before its layers, which are one deeper.
    pub depth: usize,
}

/// Everything about a model that is known at compile time.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
/// let spec = Net::<f32>::SPEC;
/// assert_eq!((spec.name, spec.input, spec.output), ("Net", &[3][..], &[2][..]));
/// assert_eq!((spec.param_count, spec.buffer_count, spec.token_vocab), (26, 0, None));
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelSpec {
    /// The struct's name.
    pub name: &'static str,
    /// Per-sample input shape.
    pub input: &'static [usize],
    /// Per-sample output shape.
    pub output: &'static [usize],
    /// The layer table, in order (blocks flattened).
    pub layers: &'static [LayerInfo],
    /// The parameter table, in buffer order.
    pub params: &'static [ParamInfo],
    /// Total parameter count.
    pub param_count: usize,
    /// State that is saved but not trained (batch norm's running statistics), in
    /// buffer order.
    pub buffers: &'static [ParamInfo],
    /// Total length of the non-trained state.
    pub buffer_count: usize,
    /// Batch-independent scratch the layers keep between forward and backward (batch
    /// statistics, per-thread partial gradients), in values.
    pub fixed: usize,
    /// Forward FLOPs per sample.
    pub flops_per_sample: u64,
    /// Per-sample start of each workspace node, plus the total at the end.
    pub nodes: &'static [usize],
    /// The node that holds the model's output.
    pub output_node: usize,
    /// For a model that starts with an `Embedding`: its vocabulary, which every input
    /// id must be below.
    pub token_vocab: Option<usize>,
    /// For a model with several inputs, those that an `Embedding` reads: `(offset,
    /// len, vocab)` of their values within each sample of the packed input, where
    /// every id must be below `vocab`.
    pub token_columns: &'static [(usize, usize, usize)],
    /// The dense weights whose gradient product a guarded SGD step forms after the
    /// backward pass, straight into the weight (see [`Model::set_nonfinite_guard`]).
    pub deferred: &'static [DeferredWeight],
    /// Whether the model is a chain of dense layers and nothing else: each reads the
    /// node the one before wrote (the first the input), the last writes the output,
    /// and activations are fused. A guarded SGD step can then bound every gradient
    /// before the backward pass and update inside it, as an unguarded step does.
    pub dense_chain: bool,
    /// For a model with named inputs and outputs (`inputs: { .. }`): each input, in the
    /// order they are packed into [`input`](Self::input); empty otherwise.
    pub input_ports: &'static [crate::outputs::Port],
    /// Each named output, in the order they are packed into [`output`](Self::output).
    pub output_ports: &'static [crate::outputs::Port],
    /// The model's ONNX operators (see [`Model::to_onnx`]).
    pub onnx: crate::onnx::OnnxPlan,
}

/// A dense layer's weight in [`ModelSpec::deferred`]: where it is, the node holding the
/// layer's input `x` (`in_features` wide) and the node whose gradient holds `g`, the
/// gradient at the layer's pre-activation after the backward pass; its gradient is
/// `gᵀx`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeferredWeight {
    /// Start of the weight in the parameter buffer.
    pub weight_offset: usize,
    /// Its length, `out_features · in_features`.
    pub weight_len: usize,
    /// The node of the layer's input.
    pub input: usize,
    /// The node of the layer's output.
    pub output: usize,
    /// The width of the input rows.
    pub in_features: usize,
    /// The activation fused after the layer, whose derivative scales `g`.
    pub activation: crate::layers::Activation,
}

impl DeferredWeight {
    /// The weight's range in the parameter buffer.
    pub const fn range(&self) -> Range<usize> {
        self.weight_offset..self.weight_offset + self.weight_len
    }
}

impl ModelSpec {
    /// The parameter called `name`.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// assert_eq!(Net::<f32>::SPEC.param("out.weight").unwrap().shape, [2, 4]);
    /// assert!(Net::<f32>::SPEC.param("out.kernel").is_none());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn param(&self, name: &str) -> Option<&ParamInfo> {
        self.params.iter().find(|p| p.is_named(name))
    }

    /// Checks that every input value is finite (a NaN would pass a ReLU as 0 and still
    /// write NaN into the weight gradients) and, for models that start with an
    /// `Embedding`, a valid token id.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// kiln::model! { struct Tagger { input: [4], emb: Embedding(vocab = 10, dim = 3), LastStep, out: Dense(2) } }
    /// assert!(Tagger::<f32>::SPEC.check_input(&[1.0_f32, 2.0, 9.0, 0.0]).is_ok());
    /// assert!(matches!(Tagger::<f32>::SPEC.check_input(&[1.0_f32, 2.0, 10.0, 0.0]), Err(Error::TokenOutOfRange { index: 2, .. })));
    /// assert!(Net::<f32>::SPEC.check_input(&[0.0_f32, f32::NAN, 0.0]).is_err());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn check_input<T: Float>(&self, input: &[T]) -> Result<()> {
        self.checked_input_max(input).map(drop)
    }

    /// [`check_input`](Self::check_input), returning the largest magnitude of the input
    /// from the same pass (which the non-finite guard bounds the first layer's weight
    /// gradient with).
    fn checked_input_max<T: Float>(&self, input: &[T]) -> Result<T> {
        let Some(max) = finite_max_abs(input) else {
            let index = input
                .iter()
                .position(|v| !v.is_finite())
                .expect("a value is not finite");
            return Err(Error::NonFiniteInput {
                value: input[index].to_f64(),
                index,
            });
        };
        let per_sample = self.input.iter().product::<usize>().max(1);
        for &(offset, len, vocab) in self.token_columns {
            for (sample, row) in input.chunks_exact(per_sample).enumerate() {
                let ids = &row[offset..offset + len];
                if let Some(i) = ids
                    .iter()
                    .position(|&id| crate::layers::token_index(id, vocab).is_none())
                {
                    return Err(Error::TokenOutOfRange {
                        id: ids[i].to_f64(),
                        index: sample * per_sample + offset + i,
                        vocab,
                    });
                }
            }
        }
        let Some(vocab) = self.token_vocab else {
            return Ok(max);
        };
        match input
            .iter()
            .position(|&id| crate::layers::token_index(id, vocab).is_none())
        {
            None => Ok(max),
            Some(index) => Err(Error::TokenOutOfRange {
                id: input[index].to_f64(),
                index,
                vocab,
            }),
        }
    }

    /// Whether any input value is a token id (which has no gradient): the model starts
    /// with an `Embedding`, or an `Embedding` reads one of its named inputs.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// kiln::model! { struct Tagger { input: [4], emb: Embedding(vocab = 10, dim = 3), LastStep, out: Dense(2) } }
    /// assert!(Tagger::<f32>::SPEC.reads_tokens() && !Net::<f32>::SPEC.reads_tokens());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub const fn reads_tokens(&self) -> bool {
        self.token_vocab.is_some() || !self.token_columns.is_empty()
    }

    /// The non-trained buffer called `name`.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// kiln::model! { struct Normed { input: [3], bn: BatchNorm1d, out: Dense(2) } }
    /// assert_eq!(Normed::<f32>::SPEC.buffer("bn.running_var").unwrap().len, 3);
    /// assert!(Net::<f32>::SPEC.buffer("bn.running_var").is_none());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn buffer(&self, name: &str) -> Option<&ParamInfo> {
        self.buffers.iter().find(|p| p.is_named(name))
    }
}

/// Clips the gradients of a backward pass not yet applied.
fn clip_pending<T: Float>(state: &mut ModelState<T>, clip: GradClip) -> Result<f64> {
    if !state.grads_pending {
        return Err(Error::Mismatch(
            "clipping needs the gradients of a backward pass not yet applied".into(),
        ));
    }
    let norm = clip.apply(&mut state.grads)?;
    state.grad_norm = Some(norm);
    Ok(norm)
}

/// Whether every value is finite: `0 · v` is 0 for a finite value and NaN otherwise,
/// summed in 16 lanes so that the pass vectorises.
fn all_finite<T: Float>(values: &[T]) -> bool {
    let finite = crate::simd::vectorized(
        #[inline(always)]
        || {
            let mut lanes = [T::ZERO; 16];
            let chunks = values.chunks_exact(16);
            let rest = chunks.remainder();
            for chunk in chunks {
                for (lane, &v) in lanes.iter_mut().zip(chunk) {
                    *lane += v * T::ZERO;
                }
            }
            let mut total = rest.iter().fold(T::ZERO, |a, &v| a + v * T::ZERO);
            for lane in lanes {
                total += lane;
            }
            total == T::ZERO
        },
    );
    // The vectorised loop returns with the upper halves of the vector registers in use;
    // the baseline code after it (the LSTM's libm calls) would stall on every SSE
    // instruction. Without this the LSTM's training step was 13 % slower.
    crate::simd::clear_upper_vector_state();
    finite
}

/// The first NaN or infinite value of a buffer laid out by `table`: its tensor's full
/// name, its index in the tensor and the value.
///
/// # Panics
/// If every value is finite, or the table does not cover the buffer.
fn first_non_finite<T: Float>(values: &[T], table: &[ParamInfo]) -> (String, usize, f64) {
    let index = values
        .iter()
        .position(|v| !v.is_finite())
        .expect("a value is not finite");
    let info = table
        .iter()
        .find(|p| p.range().contains(&index))
        .expect("every value belongs to a tensor");
    (
        info.full_name().into_owned(),
        index - info.offset,
        values[index].to_f64(),
    )
}

/// `max |v|` over `values`, or `None` if one is NaN or infinite; one vectorised pass.
/// How large a bound on a gradient or an updated weight may be for the guard to take
/// it as finite: far below the largest finite value, so that the sums forming it and
/// a weight plus the update cannot overflow (2^100 for f32, 2^960 for f64; half an ulp
/// of the largest f32 is 2^103).
fn overflow_margin<T: Float>() -> f64 {
    if T::DTYPE == "F32" {
        2f64.powi(100)
    } else {
        2f64.powi(960)
    }
}

fn finite_max_abs<T: Float>(values: &[T]) -> Option<T> {
    let max = crate::simd::vectorized(
        #[inline(always)]
        || {
            values
                .iter()
                .fold(T::AbsBits::default(), |m, v| m.max(v.abs_bits()))
        },
    );
    crate::simd::clear_upper_vector_state();
    crate::float::finite_magnitude(max)
}

/// The parameter ranges between the deferred dense weights (biases, every other
/// layer's parameters), in order.
fn outside_deferred(
    deferred: &'static [DeferredWeight],
    len: usize,
) -> impl Iterator<Item = Range<usize>> {
    let mut start = 0;
    deferred
        .iter()
        .map(DeferredWeight::range)
        .chain(std::iter::once(len..len))
        .filter_map(move |weight| {
            let gap = start..weight.start;
            start = weight.end;
            (!gap.is_empty()).then_some(gap)
        })
}

/// [`all_finite`] in two halves on rayon's threads for buffers as large as the
/// optimisers split ([`crate::optim::PARALLEL_MIN_PARAMS`]).
fn all_finite_split<T: Float>(values: &[T]) -> bool {
    if values.len() < crate::optim::PARALLEL_MIN_PARAMS {
        return all_finite(values);
    }
    let (a, b) = values.split_at(values.len() / 2);
    let (a, b) = crate::layers::join(|| all_finite(a), || all_finite(b));
    a && b
}

/// A batch's intermediate values and their gradients, sized once for the largest batch.
#[derive(Debug, Clone)]
pub struct Workspace<T> {
    nodes: &'static [usize],
    batch: usize,
    values: Vec<T>,
    grads: Vec<T>,
    fixed: Vec<T>,
    /// Whether node 0 holds the input of the last forward pass, which
    /// [`Model::backward`] reads: only [`Model::forward_train`] copies it there.
    input_held: bool,
    /// The smallest parameter offset the backward pass must reach (0: every step
    /// runs); see [`Pass::reaches`].
    trainable_from: usize,
    /// What the last noting backward pass noted, by node (see [`Pass::note`]).
    noted: Vec<Noted<T>>,
    /// In data-parallel training, where this rank's batch starts in the global batch
    /// and how many rows that holds (see [`Pass::shard`]).
    shard: Option<(usize, usize)>,
}

/// What a guarded backward pass noted of one node's value and gradient.
#[derive(Debug, Clone, Copy)]
enum Noted<T> {
    /// Nothing: no dense layer's backward pass wrote this node.
    Nothing,
    /// A value or gradient of the node is NaN or infinite.
    NonFinite,
    /// The largest magnitudes.
    Maxima(Maxima<T>),
}

/// One forward or backward pass over a batch's nodes: the value, gradient and fixed
/// scratch of a [`Workspace`], borrowed, or slices of another model's (a model used as
/// a layer runs its passes over the outer model's scratch). The input node may live
/// outside: a training step or an inference reads the caller's batch where it is
/// instead of copying it into node 0 (for a 784-wide input at batch 1024, a 3 MB copy
/// each call).
#[derive(Debug)]
pub struct Pass<'a, T> {
    nodes: &'static [usize],
    batch: usize,
    values: &'a mut [T],
    grads: &'a mut [T],
    fixed: &'a mut [T],
    trainable_from: usize,
    input: Option<&'a [T]>,
    /// Whether dense layers leave their weight gradients to [`ModelSpec::deferred`].
    deferring: bool,
    /// Whether dense layers note their [`Maxima`] (in `noted`, by node).
    noting: bool,
    noted: &'a mut [Noted<T>],
    shard: Option<(usize, usize)>,
}

impl<'a, T: Float> Pass<'a, T> {
    /// Whether the backward pass must run a step whose parameters (and every earlier
    /// step's) end at `end` in the parameter buffer: with layers frozen, a step before
    /// every trainable one needs no gradient at all. `trainable_from` 0 runs every step.
    pub fn reaches(&self, end: usize) -> bool {
        let from = self.trainable_from;
        from == 0 || from < end
    }

    /// A pass over `ws`; `input`, if given, stands for node 0.
    pub fn new(ws: &'a mut Workspace<T>, input: Option<&'a [T]>) -> Self {
        if let Some(x) = input {
            assert_eq!(x.len(), ws.range(0).len(), "input of the prepared batch");
        }
        ws.noted.fill(Noted::Nothing);
        Self {
            nodes: ws.nodes,
            batch: ws.batch,
            values: &mut ws.values,
            grads: &mut ws.grads,
            fixed: &mut ws.fixed,
            trainable_from: ws.trainable_from,
            input,
            deferring: false,
            noting: false,
            noted: &mut ws.noted,
            shard: ws.shard,
        }
    }

    /// A pass over borrowed buffers laid out by the node table `nodes` for `batch`
    /// samples: `values` (and `grads`, empty for a forward pass alone) hold at least
    /// the last node's end times `batch`; `input`, if given, stands for node 0.
    ///
    /// # Panics
    /// If a buffer is too short for the table.
    pub fn over(
        nodes: &'static [usize],
        batch: usize,
        values: &'a mut [T],
        grads: &'a mut [T],
        fixed: &'a mut [T],
        input: Option<&'a [T]>,
    ) -> Self {
        let len = nodes.last().copied().unwrap_or(0) * batch;
        assert!(values.len() >= len, "values of the pass");
        assert!(
            grads.is_empty() || grads.len() >= len,
            "gradients of the pass"
        );
        if let Some(x) = input {
            assert_eq!(x.len(), (nodes[1] - nodes[0]) * batch, "input of the pass");
        }
        Self {
            nodes,
            batch,
            values,
            grads,
            fixed,
            trainable_from: 0,
            input,
            deferring: false,
            noting: false,
            noted: &mut [],
            shard: None,
        }
    }

    /// The batch size of the pass.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// In a data-parallel step, this rank's rows within the global batch: `(first
    /// row, rows of this pass, rows of the global batch)`, for layers that draw random
    /// values per row (dropout) to draw the global batch's values for their rows.
    /// `None` outside data-parallel training. A batch that does not fit inside its
    /// stated global batch draws as a batch of its own.
    pub fn shard(&self) -> Option<(usize, usize, usize)> {
        self.shard
            .filter(|&(first, total)| first + self.batch <= total)
            .map(|(first, total)| (first, self.batch, total))
    }

    /// Whether a backward pass without an update leaves the dense layers' weight
    /// gradients unformed (a guarded SGD step forms them afterwards, into the
    /// weights): their kernels then write the input and bias gradients and leave the
    /// gradient at the pre-activation in the output node's gradient.
    pub fn deferring(&self) -> bool {
        self.deferring
    }

    /// Whether a backward pass should note, for the non-finite guard, the [`Maxima`]
    /// its dense layers take (with [`note`](Self::note)).
    pub fn noting(&self) -> bool {
        self.noting
    }

    /// Notes the largest magnitudes of `node`'s value and of its gradient at the
    /// pre-activation (`None`: one of them is not finite), for the guard to read
    /// instead of passing over them again. Ignored by a pass that does not note.
    pub fn note(&mut self, node: usize, maxima: Option<Maxima<T>>) {
        if let Some(slot) = self.noted.get_mut(node) {
            *slot = maxima.map_or(Noted::NonFinite, Noted::Maxima);
        }
    }

    fn range(&self, node: usize) -> Range<usize> {
        self.nodes[node] * self.batch..self.nodes[node + 1] * self.batch
    }

    /// The outside input, if `node` is the input node and the pass has one.
    fn outside(&self, node: usize) -> Option<&'a [T]> {
        self.input.filter(|_| node == 0)
    }

    /// The buffers of a layer's forward pass; `aux` is its auxiliary node, if any.
    ///
    /// # Panics
    /// If the nodes are not distinct.
    pub fn forward_io(
        &mut self,
        input: usize,
        output: usize,
        aux: Option<usize>,
    ) -> ForwardIo<'_, T> {
        let (r_out, r_aux) = (self.range(output), aux.map(|node| self.range(node)));
        if let Some(x) = self.outside(input) {
            let [output, aux] = disjoint_pair(self.values, r_out, r_aux);
            return ForwardIo {
                input: x,
                output,
                aux,
                fixed: self.fixed,
            };
        }
        let r_in = self.range(input);
        let [input, output, aux] = disjoint_values(self.values, r_in, r_out, r_aux);
        ForwardIo {
            input,
            output,
            aux,
            fixed: self.fixed,
        }
    }

    /// `(first, second, output)` values of a layer with two inputs.
    ///
    /// # Panics
    /// If `output` is not after both inputs.
    pub fn forward_io2(
        &mut self,
        first: usize,
        second: usize,
        output: usize,
    ) -> (&[T], &[T], &mut [T]) {
        assert!(first < output && second < output);
        let (x_first, x_second) = (self.outside(first), self.outside(second));
        let (r_first, r_second, r_out) =
            (self.range(first), self.range(second), self.range(output));
        let (head, tail) = self.values.split_at_mut(r_out.start);
        let (a, b) = (&head[r_first], &head[r_second]);
        (
            x_first.unwrap_or(a),
            x_second.unwrap_or(b),
            &mut tail[..r_out.len()],
        )
    }

    /// The buffers of a layer's backward pass; `aux` is the auxiliary node, if any.
    ///
    /// # Panics
    /// If the nodes are not distinct.
    pub fn backward_io(
        &mut self,
        input: usize,
        output: usize,
        aux: Option<usize>,
    ) -> BackwardIo<'_, T> {
        let outside = self.outside(input);
        let (r_in, r_out) = (self.range(input), self.range(output));
        let r_aux = aux.map(|node| self.range(node));
        let [grad_input, grad_output] = self
            .grads
            .get_disjoint_mut([r_in.clone(), r_out.clone()])
            .expect("workspace nodes are disjoint");
        let [input, output, aux] = disjoint_values(self.values, r_in, r_out, r_aux);
        BackwardIo {
            input: outside.unwrap_or(input),
            output,
            aux,
            grad_input,
            grad_output,
            fixed: self.fixed,
        }
    }

    /// The values of `node` and its gradient, mutably: a sum with a fused activation
    /// turns its output gradient into the gradient at the sum in place.
    pub fn value_and_grad(&mut self, node: usize) -> (&[T], &mut [T]) {
        let range = self.range(node);
        (&self.values[range.clone()], &mut self.grads[range])
    }

    /// The gradients of a residual block's input, inner output and output, and its
    /// output's values (a fused activation's derivative is read off them).
    ///
    /// # Panics
    /// If the nodes are not distinct.
    pub fn residual_grad_io(
        &mut self,
        input: usize,
        inner: usize,
        output: usize,
    ) -> ([&mut [T]; 3], &[T]) {
        let ranges = [self.range(input), self.range(inner), self.range(output)];
        let values = &self.values[self.range(output)];
        let grads = self
            .grads
            .get_disjoint_mut(ranges)
            .expect("workspace nodes are disjoint");
        (grads, values)
    }

    /// The values of the branches a merge reads (a node may be named twice: two
    /// identity branches) and its output to write.
    ///
    /// # Panics
    /// If an input is not before `output`.
    pub fn merge_io<const N: usize>(
        &mut self,
        inputs: [usize; N],
        output: usize,
    ) -> ([&[T]; N], &mut [T]) {
        assert!(
            inputs.iter().all(|&i| i < output),
            "merge inputs come first"
        );
        let outside = inputs.map(|node| self.outside(node));
        let ranges = inputs.map(|node| self.range(node));
        let r_out = self.range(output);
        let (head, tail) = self.values.split_at_mut(r_out.start);
        let head: &[T] = head;
        let mut values = ranges.map(|r| &head[r]);
        for (value, x) in values.iter_mut().zip(outside) {
            if let Some(x) = x {
                *value = x;
            }
        }
        (values, &mut tail[..r_out.len()])
    }

    /// The backward buffers of branch `which` of a merge: every branch's values, that
    /// branch's gradient and the output's.
    ///
    /// # Panics
    /// If `which` is not an input or the nodes are not distinct from `output`.
    pub fn merge_grad_io<const N: usize>(
        &mut self,
        inputs: [usize; N],
        output: usize,
        which: usize,
    ) -> MergeGradIo<'_, T, N> {
        let outside = inputs.map(|node| self.outside(node));
        let ranges = inputs.map(|node| self.range(node));
        let (r_in, r_out) = (self.range(inputs[which]), self.range(output));
        let [grad_input, grad_output] = self
            .grads
            .get_disjoint_mut([r_in, r_out])
            .expect("workspace nodes are disjoint");
        let values: &[T] = self.values;
        let mut inputs = ranges.map(|r| &values[r]);
        for (value, x) in inputs.iter_mut().zip(outside) {
            if let Some(x) = x {
                *value = x;
            }
        }
        MergeGradIo {
            inputs,
            grad_input,
            grad_output,
        }
    }
}

/// The nodes an attention layer reads: its queries' sequence and, for cross-attention
/// or a padded self-attention, the memory and the key padding.
#[derive(Debug, Clone, Copy)]
pub struct AttentionNodes {
    /// The queries' sequence (the layer's input).
    pub query: usize,
    /// The memory the keys and values come from, if not the queries' own sequence.
    pub memory: Option<usize>,
    /// The key padding, if any.
    pub key_padding: Option<usize>,
}

/// The buffers of an attention layer's forward pass.
#[derive(Debug)]
pub struct AttentionIo<'a, T> {
    /// What the layer reads, for the kernel.
    pub inputs: crate::layers::AttentionInputs<'a, T>,
    /// The output values, to write.
    pub output: &'a mut [T],
    /// The layer's auxiliary node.
    pub aux: &'a mut [T],
}

/// The buffers of an attention layer's backward pass.
#[derive(Debug)]
pub struct AttentionGradIo<'a, T> {
    /// What the layer read.
    pub inputs: crate::layers::AttentionInputs<'a, T>,
    /// The layer's auxiliary node.
    pub aux: &'a mut [T],
    /// dL/d(queries' sequence), to write.
    pub grad_query: &'a mut [T],
    /// dL/d(memory), to write (empty without a memory).
    pub grad_memory: &'a mut [T],
    /// dL/d(key padding), to zero (empty without one): the padding is data.
    pub grad_key_padding: &'a mut [T],
    /// dL/d(output).
    pub grad_output: &'a [T],
    /// The whole batch-independent scratch.
    pub fixed: &'a mut [T],
}

impl<'a, T: Float> Pass<'a, T> {
    /// Where the values of what an attention layer reads are: the outside input, or a
    /// range of the value buffer.
    #[allow(clippy::type_complexity)]
    fn attention_sources(
        &self,
        nodes: AttentionNodes,
    ) -> [Option<(Option<&'a [T]>, Range<usize>)>; 3] {
        [Some(nodes.query), nodes.memory, nodes.key_padding]
            .map(|node| node.map(|n| (self.outside(n), self.range(n))))
    }

    /// The buffers of an attention layer's forward pass.
    ///
    /// # Panics
    /// If a node it reads is not before `output`, or `aux` is not after it.
    pub fn attention_io(
        &mut self,
        nodes: AttentionNodes,
        output: usize,
        aux: usize,
    ) -> AttentionIo<'_, T> {
        let read = [Some(nodes.query), nodes.memory, nodes.key_padding];
        let sources = self.attention_sources(nodes);
        assert!(
            read.iter().flatten().all(|&n| n < output) && aux > output,
            "attention nodes in order"
        );
        let (r_out, r_aux) = (self.range(output), self.range(aux));
        let (head, tail) = self.values.split_at_mut(r_out.start);
        let (out_tail, aux_tail) = tail.split_at_mut(r_aux.start - r_out.start);
        let head: &[T] = head;
        let [query, memory, key_padding] =
            sources.map(|source| source.map(|(outside, r)| outside.unwrap_or(&head[r])));
        AttentionIo {
            inputs: crate::layers::AttentionInputs {
                query: query.expect("a query"),
                memory,
                key_padding,
            },
            output: &mut out_tail[..r_out.len()],
            aux: &mut aux_tail[..r_aux.len()],
        }
    }

    /// The buffers of an attention layer's backward pass.
    ///
    /// # Panics
    /// If the nodes are not distinct.
    pub fn attention_grad_io(
        &mut self,
        nodes: AttentionNodes,
        output: usize,
        aux: usize,
    ) -> AttentionGradIo<'_, T> {
        let ranges = [
            Some(self.range(nodes.query)),
            nodes.memory.map(|n| self.range(n)),
            nodes.key_padding.map(|n| self.range(n)),
            Some(self.range(output)),
        ];
        let sources = self.attention_sources(nodes);
        let r_aux = self.range(aux);
        let [grad_query, grad_memory, grad_key_padding, grad_output] =
            disjoint_many(self.grads, ranges);
        let (head, tail) = self.values.split_at_mut(r_aux.start);
        let head: &[T] = head;
        let [query, memory, key_padding] =
            sources.map(|source| source.map(|(outside, r)| outside.unwrap_or(&head[r])));
        AttentionGradIo {
            inputs: crate::layers::AttentionInputs {
                query: query.expect("a query"),
                memory,
                key_padding,
            },
            aux: &mut tail[..r_aux.len()],
            grad_query,
            grad_memory,
            grad_key_padding,
            grad_output,
            fixed: self.fixed,
        }
    }
}

/// Disjoint mutable slices of `buffer` for the given ranges (empty for `None`).
///
/// # Panics
/// If two ranges overlap.
fn disjoint_many<T, const N: usize>(
    buffer: &mut [T],
    ranges: [Option<Range<usize>>; N],
) -> [&mut [T]; N] {
    // In order of position (an array: this runs in every backward pass).
    let mut order: [usize; N] = std::array::from_fn(|i| i);
    order.sort_unstable_by_key(|&i| ranges[i].as_ref().map_or(0, |r| r.start));
    let mut out: [&mut [T]; N] = std::array::from_fn(|_| <&mut [T]>::default());
    let mut rest = buffer;
    let mut at = 0;
    for i in order {
        let Some(r) = ranges[i].clone() else {
            continue;
        };
        assert!(r.start >= at, "workspace nodes are disjoint");
        let (_, tail) = rest.split_at_mut(r.start - at);
        let (piece, tail) = tail.split_at_mut(r.len());
        out[i] = piece;
        rest = tail;
        at = r.end;
    }
    out
}

/// The buffers of the backward pass of one branch of a merge: every branch's values,
/// the gradient of branch `which` to write and the merge's output gradient.
#[derive(Debug)]
pub struct MergeGradIo<'a, T, const N: usize> {
    /// The values of every merged branch, in order.
    pub inputs: [&'a [T]; N],
    /// dL/d(branch `which`), to write.
    pub grad_input: &'a mut [T],
    /// dL/d(merge output).
    pub grad_output: &'a [T],
}

/// Makes `buffer` at least `len` long, as a fresh zeroed allocation when it grows: the
/// allocator hands large zeroed blocks out as untouched pages, so the parts of the
/// workspace a model never writes (the input node when the batch is read where it is,
/// the gradients of auxiliary nodes) cost address space, not memory.
fn grow<T: Float>(buffer: &mut Vec<T>, len: usize) {
    if buffer.len() < len {
        *buffer = Vec::new();
        *buffer = vec![T::ZERO; len];
    }
}

/// The output and (possibly empty) auxiliary slices of the value buffer.
fn disjoint_pair<T>(
    values: &mut [T],
    output: Range<usize>,
    aux: Option<Range<usize>>,
) -> [&mut [T]; 2] {
    match aux {
        None => [&mut values[output], <&mut [T]>::default()],
        Some(aux) => values
            .get_disjoint_mut([output, aux])
            .expect("workspace nodes are disjoint"),
    }
}

/// The buffers one layer's forward pass reads and writes.
#[derive(Debug)]
pub struct ForwardIo<'a, T> {
    /// The layer's input values.
    pub input: &'a [T],
    /// The layer's output values, to write.
    pub output: &'a mut [T],
    /// A per-layer auxiliary node (dropout's mask, pooling's argmax), empty if none.
    pub aux: &'a mut [T],
    /// The whole batch-independent scratch; each layer uses its own const range.
    pub fixed: &'a mut [T],
}

/// The buffers one layer's backward pass reads and writes.
#[derive(Debug)]
pub struct BackwardIo<'a, T> {
    /// The layer's input values.
    pub input: &'a [T],
    /// The layer's output values.
    pub output: &'a [T],
    /// A per-layer auxiliary node (dropout's mask, convolution's columns), empty if the
    /// layer has none; a layer may reuse it as scratch once it has read it.
    pub aux: &'a mut [T],
    /// dL/d`input`, to write.
    pub grad_input: &'a mut [T],
    /// dL/d`output`, to read (layers may overwrite it with intermediate gradients).
    pub grad_output: &'a mut [T],
    /// The whole batch-independent scratch.
    pub fixed: &'a mut [T],
}

impl<T: Float> Workspace<T> {
    /// An empty workspace for the node table and fixed scratch of a [`ModelSpec`].
    pub fn new(spec: &'static ModelSpec) -> Self {
        Self {
            nodes: spec.nodes,
            batch: 0,
            values: Vec::new(),
            grads: Vec::new(),
            fixed: vec![T::ZERO; spec.fixed],
            input_held: false,
            trainable_from: 0,
            noted: vec![Noted::Nothing; spec.nodes.len().saturating_sub(1)],
            shard: None,
        }
    }

    /// Makes room for the values and gradients of `batch` samples; allocates only if
    /// the batch is larger than any before. Contents are unspecified afterwards.
    pub fn prepare(&mut self, batch: usize) {
        self.prepare_inference(batch);
        grow(&mut self.grads, self.values.len());
    }

    /// Makes room for the values of `batch` samples only: inference never touches the
    /// gradients.
    pub fn prepare_inference(&mut self, batch: usize) {
        grow(
            &mut self.values,
            self.nodes.last().copied().unwrap_or(0) * batch,
        );
        self.batch = batch;
    }

    /// The batch size of the current pass.
    pub fn batch(&self) -> usize {
        self.batch
    }

    fn range(&self, node: usize) -> Range<usize> {
        self.nodes[node] * self.batch..self.nodes[node + 1] * self.batch
    }

    /// Values of `node`.
    pub fn value(&self, node: usize) -> &[T] {
        &self.values[self.range(node)]
    }

    /// Values of `node`, mutably.
    pub fn value_mut(&mut self, node: usize) -> &mut [T] {
        let range = self.range(node);
        &mut self.values[range]
    }

    /// Gradient of `node`.
    pub fn grad(&self, node: usize) -> &[T] {
        &self.grads[self.range(node)]
    }

    /// Gradient of `node`, mutably.
    pub fn grad_mut(&mut self, node: usize) -> &mut [T] {
        let range = self.range(node);
        &mut self.grads[range]
    }

    /// Values of `node` with its gradient, which a loss fills.
    pub fn value_and_grad(&mut self, node: usize) -> (&[T], &mut [T]) {
        let range = self.range(node);
        (&self.values[range.clone()], &mut self.grads[range])
    }
}

/// Training or inference, as a forward pass runs.
#[derive(Debug)]
pub enum Mode<'a> {
    /// Dropout off, batch norm on its running statistics.
    Infer,
    /// Dropout draws from the generator; batch norm uses and tracks batch statistics.
    Train(&'a mut Rng),
}

impl Mode<'_> {
    /// The dropout generator, in training.
    pub fn rng(&mut self) -> Option<&mut Rng> {
        match self {
            Mode::Infer => None,
            Mode::Train(rng) => Some(rng),
        }
    }

    /// Whether this is a training pass.
    pub fn training(&self) -> bool {
        matches!(self, Mode::Train(_))
    }
}

/// Input, output and (possibly empty) auxiliary slices of the value buffer.
fn disjoint_values<T>(
    values: &mut [T],
    input: Range<usize>,
    output: Range<usize>,
    aux: Option<Range<usize>>,
) -> [&mut [T]; 3] {
    match aux {
        None => {
            let [i, o] = values
                .get_disjoint_mut([input, output])
                .expect("workspace nodes are disjoint");
            [i, o, <&mut [T]>::default()]
        }
        Some(aux) => values
            .get_disjoint_mut([input, output, aux])
            .expect("workspace nodes are disjoint"),
    }
}

/// A model's state read from a backup, not yet put in place.
pub(crate) struct BackedUp<T> {
    params: Vec<T>,
    buffers: Vec<T>,
    rng: Rng,
    steps: u64,
}

/// What the gradient buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoredGrads {
    /// Nothing yet: no backward pass has run.
    Never,
    /// Every gradient of the last backward pass.
    All,
    /// Not the dense weights' of the training step with this index, whose products
    /// went straight into the weights.
    AppliedAt(u64),
}

/// The state a generated model holds: parameters, gradients, workspace, generators.
#[derive(Debug, Clone)]
pub struct ModelState<T> {
    params: AlignedVec<T>,
    buffers: Vec<T>,
    /// The buffers as they were before the current training step's forward pass,
    /// which updates running statistics: put back if the step fails.
    buffers_before: Vec<T>,
    grads: AlignedVec<T>,
    workspace: Workspace<T>,
    dropout_rng: Rng,
    regularization: Regularization,
    /// The clipping a training step applies to the gradients, if any.
    clip: Option<GradClip>,
    /// The global L2 norm of the last clipped gradients, before clipping.
    grad_norm: Option<f64>,
    /// Per tensor of the parameter table: whether it is frozen.
    frozen: Vec<bool>,
    /// Per tensor: the factor its updates are scaled by (a per-group learning rate).
    lr_scales: Vec<f64>,
    /// The values of the frozen and scaled tensors, kept across an optimiser step
    /// (sized when freezing or scaling).
    held_values: Vec<T>,
    /// Gradients accumulated over micro-batches, each weighted as its loss reduces
    /// (sized on first use).
    accumulated: Vec<T>,
    /// What the accumulated gradients are divided by, and whether the losses reduce
    /// by mean, once a micro-batch is in.
    accumulated_over: Option<(usize, Reduction)>,
    steps: u64,
    /// Whether `grads` holds a backward pass's gradients not yet applied.
    grads_pending: bool,
    /// Whether `grads` holds every gradient of the last backward pass.
    grads_stored: StoredGrads,
    /// Whether a step checks its gradients before the update (see
    /// [`Model::set_nonfinite_guard`]).
    guard: bool,
    /// The largest magnitude of the last training batch's input.
    input_max: f64,
    /// For a [dense chain](ModelSpec::dense_chain), per dense weight: a bound on its
    /// largest magnitude, valid while `weight_bounds_at` is the step count (set by the
    /// guarded step that updated inside its backward pass, cleared by anything else
    /// that writes the parameters), and the next step's bounds.
    weight_bounds: Vec<f64>,
    weight_bounds_next: Vec<f64>,
    weight_bounds_at: Option<u64>,
    /// The gradients summed across ranks in data-parallel training, swapped with
    /// `grads` after each all-reduce (sized on first use).
    reduced: AlignedVec<T>,
}

impl<T: Float> ModelState<T> {
    /// The values of workspace node `node` from the last pass through the workspace.
    pub fn node_values(&self, node: usize) -> &[T] {
        self.workspace.value(node)
    }

    /// Fresh state with parameters drawn from `seed`.
    pub fn new(spec: &'static ModelSpec, seed: u64) -> Self {
        let mut params = AlignedVec::new(spec.param_count, T::ZERO);
        let mut rng = init_rng(seed);
        for p in spec.params {
            p.init.fill(&mut params[p.range()], &mut rng);
        }
        let mut buffers = vec![T::ZERO; spec.buffer_count];
        for b in spec.buffers {
            b.init.fill(&mut buffers[b.range()], &mut rng);
        }
        Self {
            buffers_before: buffers.clone(),
            buffers,
            grads: AlignedVec::new(spec.param_count, T::ZERO),
            params,
            workspace: Workspace::new(spec),
            dropout_rng: dropout_rng(seed),
            regularization: Regularization::NONE,
            clip: None,
            grad_norm: None,
            frozen: vec![false; spec.params.len()],
            lr_scales: vec![1.0; spec.params.len()],
            held_values: Vec::new(),
            accumulated: Vec::new(),
            accumulated_over: None,
            steps: 0,
            grads_pending: false,
            grads_stored: StoredGrads::Never,
            guard: true,
            input_max: 0.0,
            weight_bounds: vec![0.0; spec.deferred.len()],
            weight_bounds_next: vec![0.0; spec.deferred.len()],
            weight_bounds_at: None,
            reduced: AlignedVec::new(0, T::ZERO),
        }
    }
}

impl<T: Float> ModelState<T> {
    /// Writes the model's tensors, its step count and its dropout generator's position
    /// with `state` to a backup at `path`.
    pub(crate) fn write_backup(
        &self,
        spec: &ModelSpec,
        state: &mut ResumeState<T>,
        path: &std::path::Path,
    ) -> Result<()> {
        state.set_scope("model/");
        state.put_count("steps", self.steps);
        let rng = rng_words(&self.dropout_rng);
        state.put_counts("dropout_seed", &rng[..4]);
        state.put_count("dropout_stream", rng[4]);
        state.put_counts("dropout_word", &rng[5..]);
        state.set_scope("");
        crate::train::resume::write(spec, &self.params, &self.buffers, state, path)
    }

    /// Reads a backup written by [`write_backup`](Self::write_backup): the rest of its
    /// state, and the model's part to [`commit_backup`](Self::commit_backup) once the
    /// caller has checked everything else (nothing of the model changes before).
    pub(crate) fn read_backup(
        &self,
        spec: &ModelSpec,
        path: &std::path::Path,
        bytes: Option<&[u8]>,
    ) -> Result<(ResumeState<T>, BackedUp<T>)> {
        let mut params = self.params.to_vec();
        let mut buffers = self.buffers.clone();
        let mut state = match bytes {
            Some(bytes) => {
                crate::train::resume::read_bytes(spec, &mut params, &mut buffers, bytes, path)?
            }
            None => crate::train::resume::read(spec, &mut params, &mut buffers, path)?,
        };
        state.set_scope("model/");
        let steps = state.count("steps")?;
        let seed = state.counts("dropout_seed")?;
        let word = state.counts("dropout_word")?;
        if seed.len() != 4 || word.len() != 2 {
            return Err(Error::format(
                path,
                "the dropout generator's state is malformed",
            ));
        }
        let stream = state.count("dropout_stream")?;
        let rng = rng_from_words([seed[0], seed[1], seed[2], seed[3], stream, word[0], word[1]]);
        state.set_scope("");
        Ok((
            state,
            BackedUp {
                params,
                buffers,
                rng,
                steps,
            },
        ))
    }

    /// Puts a read backup's model state in place.
    pub(crate) fn commit_backup(&mut self, backed_up: BackedUp<T>) {
        self.params.copy_from_slice(&backed_up.params);
        self.params_replaced();
        self.buffers = backed_up.buffers;
        self.dropout_rng = backed_up.rng;
        self.steps = backed_up.steps;
        self.grads_pending = false;
        self.accumulated_over = None;
    }

    /// Forgets the weight bounds of a dense chain: the parameters were written by
    /// something other than a guarded step that kept them.
    pub(crate) fn params_replaced(&mut self) {
        self.weight_bounds_at = None;
    }

    /// Whether a guarded plain-SGD step of a [dense chain](ModelSpec::dense_chain) can
    /// update inside its backward pass, as an unguarded one does: after the forward
    /// pass and the loss, bounds on every gradient it will form, taken from the
    /// activations' and the loss gradient's largest magnitudes and bounds on the
    /// weights', prove them finite and the updated weights too. From the top: with
    /// `G` bounding the gradient at a layer's output, `G·d` (`d` bounding the fused
    /// activation's derivative) bounds it at the pre-activation, `rows·G·d·max|x|` the
    /// weight's gradient and `rows·G·d` the bias's, and `out·G·d·max|W|` the gradient
    /// passed down. Each must stay below the margin [`dense_bounded`](Self::dense_bounded)
    /// uses, the weights' after the update too. On `true` the weight bounds move on by
    /// the update's bound (the step cannot fail after this); on `false` the step takes
    /// the deferred path, which checks exactly. The weights' largest magnitudes are
    /// measured (one pass over them) when no bound is kept or a kept one is too loose.
    fn chain_bounded(&mut self, spec: &ModelSpec, input: &[T], rate: f64) -> bool {
        if !spec.dense_chain || spec.deferred.is_empty() {
            return false;
        }
        let kept = self.weight_bounds_at == Some(self.steps);
        if !kept && !self.measure_weight_bounds(spec) {
            return false;
        }
        let mut bounded = self.next_chain_bounds(spec, input, rate);
        if !bounded && kept {
            bounded = self.measure_weight_bounds(spec) && self.next_chain_bounds(spec, input, rate);
        }
        if bounded {
            std::mem::swap(&mut self.weight_bounds, &mut self.weight_bounds_next);
            self.weight_bounds_at = Some(self.steps + 1);
        } else {
            self.weight_bounds_at = None;
        }
        bounded
    }

    /// The dense weights' largest magnitudes, measured; `false` if one is not finite.
    fn measure_weight_bounds(&mut self, spec: &ModelSpec) -> bool {
        for (bound, weight) in self.weight_bounds.iter_mut().zip(spec.deferred) {
            match finite_max_abs(&self.params[weight.range()]) {
                Some(max) => *bound = max.to_f64(),
                None => return false,
            }
        }
        true
    }

    /// The bounds of [`chain_bounded`](Self::chain_bounded) from the kept weight
    /// bounds, with the weights' bounds after the update in `weight_bounds_next`.
    fn next_chain_bounds(&mut self, spec: &ModelSpec, input: &[T], rate: f64) -> bool {
        let limit = overflow_margin::<T>();
        let below = |v: f64| v <= limit;
        let ws = &self.workspace;
        let output = spec.output_node;
        let (Some(_), Some(loss_grad)) = (
            finite_max_abs(ws.value(output)),
            finite_max_abs(ws.grad(output)),
        ) else {
            return false;
        };
        // The biases, and anything else outside the weights, are few: measured.
        let mut outside_max = 0.0f64;
        for range in outside_deferred(spec.deferred, spec.param_count) {
            match finite_max_abs(&self.params[range]) {
                Some(max) => outside_max = outside_max.max(max.to_f64()),
                None => return false,
            }
        }
        let mut grad = loss_grad.to_f64();
        let rate = rate.abs();
        for (l, weight) in spec.deferred.iter().enumerate().rev() {
            // The batch's largest magnitude was taken when it was checked.
            let (x, x_max) = if weight.input == 0 {
                (input, Some(self.input_max))
            } else {
                let x = ws.value(weight.input);
                (x, finite_max_abs(x).map(|m| m.to_f64()))
            };
            let Some(x_max) = x_max else {
                return false;
            };
            let rows = (x.len() / weight.in_features.max(1)) as f64;
            let out_features = (weight.weight_len / weight.in_features.max(1)) as f64;
            let pre = grad * weight.activation.derivative_bound();
            let weight_grad = rows * pre * x_max;
            let updated = self.weight_bounds[l] + rate * weight_grad;
            let bias_updated = outside_max + rate * rows * pre;
            if !(below(weight_grad) && below(updated) && below(bias_updated)) {
                return false;
            }
            self.weight_bounds_next[l] = updated;
            grad = out_features * pre * self.weight_bounds[l];
            if !below(grad) {
                return false;
            }
        }
        true
    }

    /// Whether, after a training step's backward pass over `input`, every gradient
    /// outside the dense weights is finite and every dense weight's gradient `gᵀx` has
    /// finite operands whose bound `rows · max|g| · max|x| · max(1, rate)` is far below
    /// what could overflow, even added to the largest finite weight (2^100 for f32,
    /// 2^960 for f64; half an ulp of the largest f32 is 2^103). The dense weights'
    /// gradients themselves are not read: they are the bulk of the parameters, and
    /// their operands (activations and their gradients) are far fewer; the first
    /// layer's input was checked, and its largest magnitude taken, with the batch.
    fn dense_bounded(&self, spec: &ModelSpec, input: &[T], rate: f64) -> bool {
        let limit = overflow_margin::<T>();
        let deferred = spec.deferred;
        outside_deferred(deferred, spec.param_count).all(|r| all_finite(&self.grads[r]))
            && deferred.iter().all(|weight| {
                let ws = &self.workspace;
                let noted = |node: usize| ws.noted.get(node).copied().unwrap_or(Noted::Nothing);
                let x = if weight.input == 0 {
                    input
                } else {
                    ws.value(weight.input)
                };
                // The dense layer that wrote a node noted its largest magnitudes in the
                // backward pass; anything else is read here.
                let x_max = match (weight.input, noted(weight.input)) {
                    (0, _) => Some(self.input_max),
                    (_, Noted::Maxima(m)) => Some(m.output.to_f64()),
                    (_, Noted::NonFinite) => None,
                    (_, Noted::Nothing) => finite_max_abs(x).map(|m| m.to_f64()),
                };
                let g_max = match noted(weight.output) {
                    Noted::Maxima(m) => Some(m.grad.to_f64()),
                    Noted::NonFinite => None,
                    Noted::Nothing => finite_max_abs(ws.grad(weight.output)).map(|m| m.to_f64()),
                };
                let (Some(x_max), Some(g_max)) = (x_max, g_max) else {
                    return false;
                };
                let rows = (x.len() / weight.in_features) as f64;
                rows * x_max * g_max * rate.max(1.0) <= limit
            })
    }

    /// The guarded plain-SGD step after a backward pass that deferred the dense weight
    /// gradients (`input` is the batch the pass read as node 0). If
    /// [`dense_bounded`](Self::dense_bounded), the products go straight into the
    /// weights (`W ← W − rate·gᵀx`, never stored) and the rest takes `p ← p − rate·g`.
    /// Otherwise the products are formed as gradients and the whole buffer checked
    /// exactly: an error naming the first non-finite one with nothing changed, or, when
    /// the bound was only cautious, the same step.
    fn guarded_linear_step(&mut self, spec: &ModelSpec, rate: T, input: &[T]) -> Result<()> {
        let deferred = spec.deferred;
        let bounded = self.dense_bounded(spec, input, rate.to_f64());
        fn operands<'a, T: Float>(
            ws: &'a Workspace<T>,
            input: &'a [T],
            weight: &DeferredWeight,
        ) -> (&'a [T], &'a [T]) {
            let x = if weight.input == 0 {
                input
            } else {
                ws.value(weight.input)
            };
            (x, ws.grad(weight.output))
        }
        let Self {
            params,
            grads,
            workspace,
            ..
        } = self;
        if bounded {
            for weight in deferred {
                let (x, g) = operands(workspace, input, weight);
                let w = &mut params[weight.range()];
                let add = crate::layers::Accum::Add;
                crate::layers::dense_weight_update(w, add, -rate, g, x, weight.in_features);
            }
            for range in outside_deferred(deferred, spec.param_count) {
                crate::optim::apply_linear_step(&mut params[range.clone()], &grads[range], rate);
            }
            return Ok(());
        }
        for weight in deferred {
            let (x, g) = operands(workspace, input, weight);
            let w = &mut grads[weight.range()];
            let replace = crate::layers::Accum::Replace;
            crate::layers::dense_weight_update(w, replace, T::ONE, g, x, weight.in_features);
        }
        self.grads_stored = StoredGrads::All;
        self.check_gradients(spec)?;
        crate::optim::apply_linear_step(&mut self.params, &self.grads, rate);
        Ok(())
    }

    /// The non-finite guard before an optimiser step: an error naming the first NaN or
    /// infinite gradient, with nothing changed. With clipping on, its norm (NaN or
    /// infinite for such a gradient) already guards, and this pass is skipped.
    fn check_gradients(&self, spec: &ModelSpec) -> Result<()> {
        if !self.guard || self.clip.is_some() || all_finite_split(&self.grads) {
            return Ok(());
        }
        let (tensor, index, value) = first_non_finite(&self.grads, spec.params);
        Err(Error::NonFiniteParameterGradient {
            tensor,
            index,
            value,
            step: self.steps,
        })
    }

    /// Puts back the buffers a failed training step's forward pass changed.
    fn restore_buffers(&mut self) {
        self.buffers.copy_from_slice(&self.buffers_before);
    }

    /// The guard after a training forward pass: an error naming the first buffer
    /// value (a running statistic) it left NaN or infinite.
    fn check_buffers(&self, spec: &ModelSpec) -> Result<()> {
        if !self.guard || all_finite(&self.buffers) {
            return Ok(());
        }
        let (tensor, index, value) = first_non_finite(&self.buffers, spec.buffers);
        Err(Error::NonFiniteBuffer {
            tensor,
            index,
            value,
            step: self.steps,
        })
    }

    fn any_frozen(&self) -> bool {
        self.frozen.iter().any(|&f| f)
    }

    /// Tells the next backward pass how far it must reach: everything for the input's
    /// gradient, else down to the first trainable tensor.
    fn prepare_backward(&mut self, spec: &ModelSpec, to_input: bool) {
        self.workspace.trainable_from = if to_input {
            0
        } else {
            trainable_from(spec, &self.frozen)
        };
    }

    /// Zeros the frozen tensors' gradients, which a backward pass may have skipped or
    /// computed on the way to a trainable tensor before them.
    fn zero_frozen_grads(&mut self, spec: &ModelSpec) {
        for (p, _) in spec.params.iter().zip(&self.frozen).filter(|(_, &f)| f) {
            self.grads[p.range()].fill(T::ZERO);
        }
    }

    /// Whether a step must keep some tensors' values: frozen or scaled ones.
    fn holds_any(&self) -> bool {
        self.any_frozen() || self.lr_scales.iter().any(|&s| s != 1.0)
    }

    /// `optimizer.step`, with the frozen tensors put back as they were afterwards, so
    /// that no rule (weight decay, momentum from before freezing) moves them, and the
    /// update of a tensor with a learning-rate scale `s` made `s` times as large
    /// (every optimiser's update is proportional to its rate, decoupled weight decay
    /// included, and its state does not depend on the rate).
    fn step_keeping_frozen<O: Optimizer<T>>(
        &mut self,
        spec: &ModelSpec,
        optimizer: &mut O,
    ) -> Result<()> {
        self.params_replaced();
        if !self.holds_any() {
            return optimizer.step(&mut self.params, &self.grads);
        }
        let mut at = 0;
        for ((p, &f), &s) in spec.params.iter().zip(&self.frozen).zip(&self.lr_scales) {
            if f || s != 1.0 {
                self.held_values[at..at + p.len].copy_from_slice(&self.params[p.range()]);
                at += p.len;
            }
        }
        let result = optimizer.step(&mut self.params, &self.grads);
        let mut at = 0;
        for ((p, &f), &s) in spec.params.iter().zip(&self.frozen).zip(&self.lr_scales) {
            if !(f || s != 1.0) {
                continue;
            }
            let old = &self.held_values[at..at + p.len];
            let new = &mut self.params[p.range()];
            if f {
                new.copy_from_slice(old);
            } else {
                let scale = T::from_f64(s);
                for (v, &o) in new.iter_mut().zip(old) {
                    *v = o + scale * (*v - o);
                }
            }
            at += p.len;
        }
        result
    }

    /// Sizes the buffer that keeps frozen and scaled tensors across a step.
    fn size_held(&mut self, spec: &ModelSpec) {
        let len: usize = spec
            .params
            .iter()
            .zip(self.frozen.iter().zip(&self.lr_scales))
            .filter(|(_, (&f, &s))| f || s != 1.0)
            .map(|(p, _)| p.len)
            .sum();
        self.held_values.resize(len, T::ZERO);
    }

    /// The rows of the tensors `pattern` names, or an error if none.
    fn matching(spec: &ModelSpec, pattern: &str) -> Result<Vec<usize>> {
        let rows: Vec<usize> = spec
            .params
            .iter()
            .enumerate()
            .filter(|(_, p)| name_matches(pattern, &p.full_name()))
            .map(|(i, _)| i)
            .collect();
        if rows.is_empty() {
            return Err(Error::Mismatch(format!(
                "no parameter matches `{pattern}` (a name such as `fc1.weight`, a layer or \
                 block such as `fc1`, or a pattern with `*` such as `conv*`)"
            )));
        }
        Ok(rows)
    }

    /// Freezes (or unfreezes) the tensors `pattern` matches; returns how many.
    fn set_frozen(&mut self, spec: &ModelSpec, pattern: &str, frozen: bool) -> Result<usize> {
        let rows = Self::matching(spec, pattern)?;
        for &row in &rows {
            self.frozen[row] = frozen;
        }
        self.size_held(spec);
        Ok(rows.len())
    }

    /// Scales the updates of the tensors `pattern` matches; returns how many.
    fn set_lr_scale(&mut self, spec: &ModelSpec, pattern: &str, scale: f64) -> Result<usize> {
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(Error::InvalidHyperParameter {
                name: "learning-rate scale",
                value: scale,
                reason: "must be a finite number of at least 0",
            });
        }
        let rows = Self::matching(spec, pattern)?;
        for &row in &rows {
            self.lr_scales[row] = scale;
        }
        self.size_held(spec);
        Ok(rows.len())
    }
}

/// The smallest parameter offset of a trainable tensor when some are frozen, so that
/// a backward pass skips the steps before it; 0 (every step runs) when nothing is
/// frozen, when that offset is 0, or when a user layer's tensor (laid out after the
/// others, so not in step order) trains.
fn trainable_from(spec: &ModelSpec, frozen: &[bool]) -> usize {
    if !frozen.iter().any(|&f| f) {
        return 0;
    }
    let mut from = usize::MAX;
    for (p, _) in spec.params.iter().zip(frozen).filter(|(_, &f)| !f) {
        if !p.scope.is_empty() {
            return 0;
        }
        from = from.min(p.offset);
    }
    from
}

/// Whether the tensor `name` is what `pattern` names: the tensor itself, a layer or
/// block it is in (`fc1`, `layer1.0`), or a glob where `*` stands for any characters
/// (`conv*`, `*.bias`).
fn name_matches(pattern: &str, name: &str) -> bool {
    if !pattern.contains('*') {
        return name == pattern
            || name
                .strip_prefix(pattern)
                .is_some_and(|rest| rest.starts_with('.'));
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Named views into a parameter-shaped buffer (the parameters or their gradients).
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
/// let net = Net::<f32>::new(0);
/// let params = net.params();
/// for (info, values) in params.iter() {
///     assert_eq!(values.len(), info.len);
/// }
/// println!("{params:?}"); // every tensor by name
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct ParamSet<'a, T> {
    data: &'a [T],
    table: &'static [ParamInfo],
}

/// The gradients of the last backward pass, laid out like the parameters.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
/// let mut net = Net::<f64>::new(0);
/// net.value_and_grad(TensorRef::<f64, Shape1<3>>::new(&[1.0, 2.0, 3.0])?, &[1usize][..], &CrossEntropy::default())?;
/// let grads: kiln::Grads<'_, f64> = net.grads()?;
/// assert_eq!(grads.get("out.bias").unwrap().iter().sum::<f64>().abs() < 1e-12, true); // softmax − one-hot sums to 0
/// # Ok::<(), kiln::Error>(())
/// ```
pub type Grads<'a, T> = ParamSet<'a, T>;

impl<'a, T> ParamSet<'a, T> {
    /// The whole buffer.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// let net = Net::<f32>::new(0);
    /// assert_eq!(net.params().as_slice().len(), 26);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn as_slice(&self) -> &'a [T] {
        self.data
    }

    /// The tensor called `name` (`fc1.weight`), row-major in PyTorch's layout.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// let net = Net::<f32>::new(0);
    /// let w = net.params().get("fc.weight").unwrap(); // [4, 3]: row j holds unit j's weights
    /// assert_eq!(w.len(), 12);
    /// assert!(net.params().get("fc.kernel").is_none());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn get(&self, name: &str) -> Option<&'a [T]> {
        self.table
            .iter()
            .find(|p| p.is_named(name))
            .map(|p| &self.data[p.range()])
    }

    /// `(info, values)` for each tensor, in buffer order.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// let net = Net::<f32>::new(0);
    /// let names: Vec<&str> = net.params().iter().map(|(info, _)| info.name).collect();
    /// assert_eq!(names, ["fc.weight", "fc.bias", "out.weight", "out.bias"]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&'static ParamInfo, &'a [T])> + '_ {
        self.table.iter().map(|p| (p, &self.data[p.range()]))
    }
}

impl<T: fmt::Debug> fmt::Debug for ParamSet<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for p in self.table {
            map.entry(&p.full_name(), &&self.data[p.range()]);
        }
        map.finish()
    }
}

/// The proof that kiln is the caller. The methods of [`Model`] that `model!` generates
/// (the model's state and its two passes) each take one, and only kiln can make one: a
/// program can call every provided method, but not the generated ones, so the
/// invariants the provided methods keep (a workspace sized for the batch, gradients that
/// belong to the last pass, the guard's backups) hold whatever the program does.
#[derive(Clone, Copy, Debug)]
pub struct Sealed(());

/// The one value of [`Sealed`], for kiln's own calls.
pub(crate) const SEALED: Sealed = Sealed(());

/// A network generated by `model!`.
///
/// The methods without a default are generated: `model!` implements them, and only
/// kiln calls them (each takes a [`Sealed`], which nothing outside kiln can make).
///
/// ```
/// use kiln::prelude::*;
///
/// kiln::model! { struct Net { input: [2], hidden: Dense(8), Tanh, out: Dense(1) } }
///
/// // Any model generated by model! is a Model: generic code trains any of them.
/// fn fit_xor<M: Model<f32, Input = Shape1<2>>>(model: &mut M) -> kiln::Result<f32> {
///     let x = TensorRef::<f32, Shape1<2>>::new(&[0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0])?;
///     let y = [0.0, 1.0, 1.0, 0.0];
///     let mut adam = Adam::new(0.05);
///     for _ in 0..500 {
///         model.train_step(x, &y[..], &BceWithLogits::default(), &mut adam)?;
///     }
///     model.evaluate_loss(x, &y[..], &BceWithLogits::default())
/// }
/// assert!(fit_xor(&mut Net::<f32>::new(0))? < 0.1);
/// # Ok::<(), kiln::Error>(())
/// ```
pub trait Model<T: Float>: Sized {
    /// Per-sample input shape.
    type Input: Shape;
    /// Per-sample output shape.
    type Output: Shape;
    /// The model's compile-time tables.
    const SPEC: &'static ModelSpec;

    #[doc(hidden)]
    fn state(&self, sealed: Sealed) -> &ModelState<T>;
    #[doc(hidden)]
    fn state_mut(&mut self, sealed: Sealed) -> &mut ModelState<T>;
    #[doc(hidden)]
    fn from_state(state: ModelState<T>, sealed: Sealed) -> Self;
    /// Generated: the forward pass over the workspace; node 0, the input, is either in
    /// the workspace or outside it ([`Pass`]).
    /// In [`Mode::Train`], dropout draws from the generator and batch norm normalises
    /// with batch statistics and updates its running ones in `buffers`.
    #[doc(hidden)]
    fn forward_pass(
        params: &[T],
        buffers: &mut [T],
        ws: &mut Pass<'_, T>,
        mode: Mode<'_>,
        sealed: Sealed,
    );
    /// Generated: the backward pass, from the gradient of the output node (filled by
    /// the loss) to `grads`, which it replaces. With `update = Some(rate)` it also
    /// makes the step `p ← p − rate·g` of each layer's parameters once that layer's
    /// gradients are formed and nothing later in the pass reads its parameters; dense
    /// layers then fold it into their weight-gradient product and leave their entries
    /// of `grads` unwritten. With `to_input` it also writes the gradient of node 0, the
    /// input (and runs the backward of the parameter-free layers before the first layer
    /// with parameters, which it skips otherwise).
    #[doc(hidden)]
    fn backward_pass(
        params: &mut [T],
        grads: &mut [T],
        ws: &mut Pass<'_, T>,
        update: Option<T>,
        to_input: bool,
        sealed: Sealed,
    );

    /// A model with PyTorch's default initialisation drawn from `seed`.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let a = Net::<f64>::with_seed(3); // what Net::new(3) calls
    /// assert_eq!(a.params().as_slice(), Net::<f64>::new(3).params().as_slice());
    /// assert_ne!(a.params().as_slice(), Net::<f64>::new(4).params().as_slice());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn with_seed(seed: u64) -> Self {
        Self::from_state(ModelState::new(Self::SPEC, seed), SEALED)
    }

    /// Inference: the outputs for a batch, with dropout off.
    ///
    /// Allocates its buffers per call; for a training loop use
    /// [`forward_train`](Self::forward_train), which reuses the workspace.
    ///
    /// Unchecked, for speed: a NaN or infinite input value gives NaN or meaningless
    /// outputs, and an invalid token id a zero embedding. [`try_forward`](Self::try_forward)
    /// refuses such a batch; training and evaluation always check.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let y = net.forward(x);
    /// assert_eq!((y.batch(), y.sample(0).len()), (2, 2));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn forward<'a>(&self, x: impl Into<TensorRef<'a, T, Self::Input>>) -> Tensor<T, Self::Output> {
        let x = x.into();
        let mut ws = Workspace::new(Self::SPEC);
        ws.prepare_inference(x.batch());
        // Inference only reads the buffers; the copy keeps `&self`.
        let mut buffers = self.state(SEALED).buffers.clone();
        let mut pass = Pass::new(&mut ws, Some(x.as_slice()));
        Self::forward_pass(
            &self.state(SEALED).params,
            &mut buffers,
            &mut pass,
            Mode::Infer,
            SEALED,
        );
        Tensor::from_vec(ws.value(Self::SPEC.output_node).to_vec())
            .expect("a non-empty batch gives a non-empty output")
    }

    /// [`forward`](Self::forward) after checking the batch: a NaN or infinite value is
    /// [`Error::NonFiniteInput`] (naming its index), a token id outside the vocabulary
    /// [`Error::TokenOutOfRange`]. The check is one vectorised pass over the batch.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert_eq!(net.try_forward(x)?, net.forward(x));
    /// let bad = [0.5, f64::NAN, 2.0];
    /// assert!(matches!(net.try_forward(TensorRef::new(&bad)?), Err(Error::NonFiniteInput { index: 1, .. })));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn try_forward<'a>(
        &self,
        x: impl Into<TensorRef<'a, T, Self::Input>>,
    ) -> Result<Tensor<T, Self::Output>> {
        let x = x.into();
        Self::SPEC.check_input(x.as_slice())?;
        Ok(self.forward(x))
    }

    /// Training forward: runs with dropout active, keeps every intermediate value for
    /// [`backward`](Self::backward) and returns the outputs.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let outputs = net.forward_train(x).to_vec(); // kept for the backward pass
    /// assert_eq!(outputs.len(), 4);
    /// net.backward(&[0.1, -0.1, 0.2, -0.2])?;
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn forward_train<'a>(&mut self, x: impl Into<TensorRef<'a, T, Self::Input>>) -> &[T] {
        run_in_workspace::<T, Self>(self.state_mut(SEALED), x.into(), Run::KeepInput)
    }

    /// Inference through the model's own workspace: like [`forward`](Self::forward)
    /// (dropout off, input unchecked) but without allocating after the first batch of
    /// this size. Returns the outputs; [`backward`](Self::backward) must not follow it.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let served = net.infer(x).to_vec(); // no allocation after the first batch of 2
    /// assert_eq!(served, net.forward(x).into_vec());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn infer<'a>(&mut self, x: impl Into<TensorRef<'a, T, Self::Input>>) -> &[T] {
        run_in_workspace::<T, Self>(self.state_mut(SEALED), x.into(), Run::Infer)
    }

    /// [`infer`](Self::infer) after the checks of [`try_forward`](Self::try_forward): a
    /// serving loop that refuses bad input and allocates nothing after its first batch.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert_eq!(net.try_infer(x)?.len(), 4);
    /// let bad = [f64::INFINITY, 0.0, 0.0];
    /// assert!(net.try_infer(TensorRef::new(&bad)?).is_err());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn try_infer<'a>(&mut self, x: impl Into<TensorRef<'a, T, Self::Input>>) -> Result<&[T]> {
        let x = x.into();
        Self::SPEC.check_input(x.as_slice())?;
        Ok(self.infer(x))
    }

    /// The outputs of the last forward pass through the workspace (a training step,
    /// [`forward_train`](Self::forward_train) or [`infer`](Self::infer)): what a
    /// training loop reads to score a batch without running it again.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// net.train_step(x, &labels[..], &loss, &mut Sgd::new(0.1))?;
    /// let scored = net.last_output(); // the step's outputs, before its update
    /// assert_eq!(scored.len(), 4);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn last_output(&self) -> &[T] {
        self.state(SEALED).workspace.value(Self::SPEC.output_node)
    }

    /// Backward pass after [`forward_train`](Self::forward_train): fills
    /// [`grads`](Self::grads) from dL/d`output`.
    ///
    /// Fails if `grad_output` does not have the length of the last forward's output, or
    /// if the last pass was not [`forward_train`](Self::forward_train): a backward pass
    /// uses up what the forward pass saved, so a second one needs `forward_train` again.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// net.forward_train(x);
    /// net.backward(&[1.0, 0.0, 0.0, 1.0])?;
    /// assert_eq!(net.grads()?.get("out.bias").unwrap(), [1.0, 1.0]); // summed over the batch
    /// assert!(net.backward(&[1.0, 0.0, 0.0, 1.0]).is_err()); // needs forward_train again
    /// assert!(net.backward(&[1.0]).is_err()); // not the output's length
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn backward(&mut self, grad_output: &[T]) -> Result<()> {
        backward_from::<T, Self>(self.state_mut(SEALED), grad_output, false)
    }

    /// Backward pass after [`forward_train`](Self::forward_train) that also returns
    /// dL/d`input`, the gradient of the loss with respect to the batch itself, laid out
    /// as the batch: what chains two models in a custom loop (a discriminator's input
    /// gradient drives the generator's [`backward`](Self::backward) in a GAN), and what
    /// saliency maps and adversarial examples read. [`grads`](Self::grads) is filled as
    /// by `backward`; a plain `backward` does none of this extra work. (An example is
    /// in the `kiln` crate's documentation.)
    ///
    /// Fails as [`backward`](Self::backward) does, and for a model whose input is token
    /// ids (its first layer an `Embedding`), which have no gradient.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// net.forward_train(x);
    /// let dx = net.backward_to_input(&[1.0, 0.0, 0.0, 1.0])?;
    /// assert_eq!(dx.len(), 6); // laid out as x
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn backward_to_input(&mut self, grad_output: &[T]) -> Result<&[T]> {
        if Self::SPEC.reads_tokens() {
            return Err(Error::Mismatch(
                "the model reads token ids, which have no gradient".into(),
            ));
        }
        let state = self.state_mut(SEALED);
        backward_from::<T, Self>(state, grad_output, true)?;
        Ok(state.workspace.grad(0))
    }

    /// One training step: forward, loss, backward, regularisation, optimiser update.
    /// Returns the loss of the batch (including the regularisation penalty).
    ///
    /// `target` is anything that views as the loss's target: `&labels` for a
    /// `Vec<usize>` with [`CrossEntropy`](crate::loss::CrossEntropy), `&values` for a
    /// `Vec<T>` with [`Mse`](crate::loss::Mse).
    ///
    /// Errors — a bad target, a non-finite loss, gradient or running statistic, an
    /// invalid optimiser setting — leave the parameters and buffers (running
    /// statistics) as they were.
    ///
    /// With plain SGD ([`Optimizer::linear_step`]) and no regularisation, each layer's
    /// update is made inside the backward pass as soon as its gradients are formed, and
    /// dense layers add `−lr·gᵀx` straight into their weights: their gradients are never
    /// stored, so [`grads`](Self::grads) does not hold this step's values for them. Call
    /// [`backward`](Self::backward) after [`forward_train`](Self::forward_train) when
    /// you need the gradients themselves.
    ///
    /// Large layers split the batch across rayon's threads. [`fit`](Self::fit) runs its
    /// whole loop on rayon's pool; a loop of your own should too, inside
    /// `rayon::scope(|_| ...)`: called from a thread outside the pool, every split hands
    /// its work over and sleeps until it is done: the 784-128-10 MLP's step at batch
    /// 128 took 511 µs that way against 435 µs on the pool (`benches/training.rs`).
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let mut adam = Adam::new(1e-2);
    /// let first = net.train_step(x, &labels[..], &loss, &mut adam)?;
    /// for _ in 0..50 {
    ///     net.train_step(x, &labels[..], &loss, &mut adam)?;
    /// }
    /// assert!(net.evaluate_loss(x, &labels[..], &loss)? < first);
    /// let before = net.params().as_slice().to_vec();
    /// assert!(net.train_step(x, &[1usize, 7][..], &loss, &mut adam).is_err()); // no class 7
    /// assert_eq!(net.params().as_slice(), before); // nothing changed
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn train_step<'a, L, O, Y>(
        &mut self,
        x: impl Into<TensorRef<'a, T, Self::Input>>,
        target: &Y,
        loss: &L,
        optimizer: &mut O,
    ) -> Result<T>
    where
        L: Loss<T>,
        O: Optimizer<T>,
        Y: AsRef<L::Target> + ?Sized,
    {
        let x = x.into();
        let state = self.state_mut(SEALED);
        let value = forward_and_loss::<T, Self, L>(state, x, target.as_ref(), loss, Run::Train)?;
        // A step that fails from here on leaves the running statistics the forward
        // pass moved as they were, with the parameters.
        let stepped = step_after_forward::<T, Self, O>(state, x.as_slice(), value, optimizer);
        if stepped.is_err() {
            state.restore_buffers();
        }
        stepped
    }

    /// The loss of a batch and its gradients, in one call, as JAX's `value_and_grad`
    /// (PyTorch's forward, loss and `loss.backward()`): [`forward_train`](Self::forward_train),
    /// `loss` and its gradient, [`backward`](Self::backward). The gradients are then in
    /// [`grads`](Self::grads), for [`apply_gradients`](Self::apply_gradients) or your
    /// own use. `target` is as for [`train_step`](Self::train_step). Returns the loss
    /// (without any regularisation penalty, which `apply_gradients` returns).
    ///
    /// Fails on a bad batch or target, or a non-finite loss, with the parameters and
    /// gradients as they were.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let value = net.value_and_grad(x, &labels[..], &loss)?;
    /// assert_eq!(value, net.evaluate_loss(x, &labels[..], &loss)?);
    /// assert_eq!(net.grads()?.get("fc.weight").unwrap().len(), 12);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn value_and_grad<'a, L, Y>(
        &mut self,
        x: impl Into<TensorRef<'a, T, Self::Input>>,
        target: &Y,
        loss: &L,
    ) -> Result<T>
    where
        L: Loss<T>,
        Y: AsRef<L::Target> + ?Sized,
    {
        value_and_grad::<T, Self, L>(
            self.state_mut(SEALED),
            x.into(),
            target.as_ref(),
            loss,
            false,
        )
    }

    /// [`value_and_grad`](Self::value_and_grad) that also returns dL/d`input`, laid out
    /// as the batch (see [`backward_to_input`](Self::backward_to_input)): a GAN's
    /// generator loss through its discriminator in one call.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let (value, dx) = net.value_and_grad_to_input(x, &labels[..], &loss)?;
    /// assert!(value > 0.0 && dx.len() == 6);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn value_and_grad_to_input<'a, L, Y>(
        &mut self,
        x: impl Into<TensorRef<'a, T, Self::Input>>,
        target: &Y,
        loss: &L,
    ) -> Result<(T, &[T])>
    where
        L: Loss<T>,
        Y: AsRef<L::Target> + ?Sized,
    {
        if Self::SPEC.reads_tokens() {
            return Err(Error::Mismatch(
                "the model reads token ids, which have no gradient".into(),
            ));
        }
        let state = self.state_mut(SEALED);
        let value = value_and_grad::<T, Self, L>(state, x.into(), target.as_ref(), loss, true)?;
        Ok((value, state.workspace.grad(0)))
    }

    /// Updates the parameters with `optimizer` from the gradients of the last
    /// [`backward`](Self::backward) or [`backward_to_input`](Self::backward_to_input):
    /// the last call of a custom loop's step (`forward_train`, a loss of your own,
    /// `backward`, `apply_gradients`), counted in [`steps`](Self::steps). With a
    /// [`Regularization`] set, its penalty's gradient is added first and the penalty
    /// returned (0 without one), so that the loop can add it to its loss.
    ///
    /// Fails, leaving the parameters as they were, if no backward pass has run since
    /// the last update (the same gradients would be applied twice), if the penalty is
    /// not finite, or if the optimiser rejects a setting; run `backward` again before
    /// retrying.
    ///
    /// (An example is in the `kiln` crate's documentation.)
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// net.set_regularization(Regularization::l2(1e-3));
    /// net.value_and_grad(x, &labels[..], &loss)?;
    /// let penalty = net.apply_gradients(&mut Sgd::new(0.1))?;
    /// assert!(penalty > 0.0 && net.steps() == 1);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn apply_gradients<O: Optimizer<T>>(&mut self, optimizer: &mut O) -> Result<T> {
        let spec = Self::SPEC;
        let state = self.state_mut(SEALED);
        if !state.grads_pending {
            return Err(Error::Mismatch(
                "apply_gradients needs backward (or backward_to_input) since the last \
                 update: these gradients were applied already, or none were computed"
                    .into(),
            ));
        }
        // The gradients are about to change (the penalty's gradient) or be used: a
        // failure below needs a new backward pass before a retry.
        state.grads_pending = false;
        let mut penalty = T::ZERO;
        if state.regularization.is_active() {
            for p in spec.params.iter().filter(|p| p.regularized) {
                penalty += state
                    .regularization
                    .apply(&state.params[p.range()], &mut state.grads[p.range()]);
            }
            if !penalty.is_finite() {
                return Err(Error::NonFiniteLoss {
                    loss: penalty.to_f64(),
                    step: state.steps,
                });
            }
        }
        state.zero_frozen_grads(spec);
        state.check_gradients(spec)?;
        if let Some(clip) = state.clip {
            state.grad_norm = Some(clip.apply(&mut state.grads)?);
        }
        state.step_keeping_frozen(spec, optimizer)?;
        state.steps += 1;
        Ok(penalty)
    }

    /// Data-parallel custom loops (see [`crate::distributed`]): sums the gradients of
    /// the last backward pass across the ranks of `comm`, each rank's first scaled by
    /// `weight`, its share of the global batch (`rows / total` for a mean-reduced loss,
    /// so that the sum is the whole global batch's gradient; `1.0` for a summed loss).
    /// Every rank calls it with its own weight; [`apply_gradients`](Self::apply_gradients)
    /// then takes the same step on every rank. With
    /// [`set_batch_part`](Self::set_batch_part), dropout draws the masks one process
    /// would draw for the global batch.
    ///
    /// (An example is in the `kiln` crate's documentation.)
    ///
    /// Fails, changing nothing, if no backward pass has run since the last update, or
    /// if the communicator fails.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// use kiln::distributed::SingleProcess;
    /// net.value_and_grad(x, &labels[..], &loss)?;
    /// let before = net.grads()?.as_slice().to_vec();
    /// net.all_reduce_gradients(&SingleProcess, 1.0)?; // one rank: the sum is its own
    /// assert_eq!(net.grads()?.as_slice(), before);
    /// net.apply_gradients(&mut Sgd::new(0.1))?;
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn all_reduce_gradients(
        &mut self,
        comm: &dyn crate::distributed::Communicator,
        weight: f64,
    ) -> Result<()> {
        let state = self.state_mut(SEALED);
        if !state.grads_pending {
            return Err(Error::Mismatch(
                "all_reduce_gradients needs backward (or value_and_grad) since the last update"
                    .into(),
            ));
        }
        if state.reduced.len() != state.grads.len() {
            state.reduced = AlignedVec::new(state.grads.len(), T::ZERO);
        }
        if weight == 1.0 {
            crate::distributed::all_reduce_sum(comm, &state.grads, &mut state.reduced)?;
            core::mem::swap(&mut state.grads, &mut state.reduced);
        } else {
            // Scaled into the spare buffer and summed from there back into `grads`.
            let w = T::from_f64(weight);
            for (r, &g) in state.reduced.iter_mut().zip(state.grads.iter()) {
                *r = g * w;
            }
            crate::distributed::all_reduce_sum(comm, &state.reduced, &mut state.grads)?;
        }
        Ok(())
    }

    /// Makes every rank's parameters, batch norm statistics and dropout generator
    /// rank 0's (a collective: every rank of `comm` calls it), so that ranks whose
    /// models were built or loaded differently start alike.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// use kiln::distributed::SingleProcess;
    /// let before = net.params().as_slice().to_vec();
    /// net.broadcast_parameters(&SingleProcess)?; // one rank is rank 0
    /// assert_eq!(net.params().as_slice(), before);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn broadcast_parameters(&mut self, comm: &dyn crate::distributed::Communicator) -> Result<()> {
        self.state_mut(SEALED).broadcast_from_root(comm)
    }

    /// Where the next training passes' rows sit in their global batch (see
    /// [`Batches::sharded`](crate::data::Batches::sharded)), so that dropout draws the
    /// masks one process would draw for the global batch; `None` (the default) for a
    /// batch of its own. [`fit`](Self::fit) sets this itself.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// use kiln::data::BatchPart;
    /// kiln::model! { struct Dropping { input: [3], fc: Dense(8), Dropout(0.5), out: Dense(2) } }
    /// let global: Vec<f64> = (0..12).map(|i| i as f64 / 12.0).collect();
    /// let global = TensorRef::<f64, Shape1<3>>::new(&global)?;
    /// let mut one_process = Dropping::<f64>::new(0);
    /// let mut rank_1 = one_process.clone();
    /// let whole = one_process.forward_train(global).to_vec();
    /// // Rank 1 of 2 trains rows 2..4 of the global batch of 4: the same dropout masks.
    /// rank_1.set_batch_part(Some(BatchPart { first: 2, rows: 2, total: 4 }));
    /// assert_eq!(rank_1.forward_train(global.slice(2, 4)), &whole[4..]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn set_batch_part(&mut self, part: Option<crate::data::BatchPart>) {
        self.state_mut(SEALED).workspace.shard = part.map(|p| (p.first, p.total));
    }

    /// Gradient accumulation: the forward and backward passes of one micro-batch, its
    /// gradients added to those accumulated since the last
    /// [`apply_accumulated`](Self::apply_accumulated), which then steps as one batch of
    /// all of them would: k micro-batches of b samples give the step of one batch of
    /// k·b (for a mean-reduced loss, each micro-batch weighs by its sample count, so
    /// sizes may differ; for a summed one, the sums add). Returns the micro-batch's
    /// loss. Batch norm normalises each micro-batch by its own statistics, as in
    /// PyTorch, so a model with batch norm is not exactly equivalent.
    ///
    /// Fails, adding nothing, on a bad batch or target, a non-finite loss, or a loss
    /// that reduces otherwise than the micro-batches before it.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// // Two micro-batches of one sample step as one batch of two.
    /// let mut whole = net.clone();
    /// whole.value_and_grad(x, &labels[..], &loss)?;
    /// whole.apply_gradients(&mut Sgd::new(0.1))?;
    /// net.accumulate_gradients(x.slice(0, 1), &labels[..1], &loss)?;
    /// net.accumulate_gradients(x.slice(1, 2), &labels[1..], &loss)?;
    /// net.apply_accumulated(&mut Sgd::new(0.1))?;
    /// let gap = net.params().as_slice().iter().zip(whole.params().as_slice()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    /// assert!(gap < 1e-15);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn accumulate_gradients<'a, L, Y>(
        &mut self,
        x: impl Into<TensorRef<'a, T, Self::Input>>,
        target: &Y,
        loss: &L,
    ) -> Result<T>
    where
        L: Loss<T>,
        Y: AsRef<L::Target> + ?Sized,
    {
        let x = x.into();
        let reduction = loss.reduction();
        let state = self.state_mut(SEALED);
        state.check_accumulating(reduction)?;
        let value = value_and_grad::<T, Self, L>(state, x, target.as_ref(), loss, false)?;
        let batch = x.batch();
        state.accumulate(reduction, batch, batch);
        Ok(value)
    }

    /// Steps `optimizer` on the gradients accumulated by
    /// [`accumulate_gradients`](Self::accumulate_gradients) since the last call, as
    /// [`apply_gradients`](Self::apply_gradients) does (penalty, frozen tensors,
    /// clipping, one counted step), and starts a new accumulation. Returns the
    /// penalty. Fails if nothing was accumulated; a failing step leaves the
    /// parameters as they were and the accumulation cleared.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert!(net.apply_accumulated(&mut Sgd::new(0.1)).is_err()); // nothing accumulated
    /// net.accumulate_gradients(x, &labels[..], &loss)?;
    /// assert_eq!(net.apply_accumulated(&mut Sgd::new(0.1))?, 0.0); // no penalty set
    /// assert_eq!(net.steps(), 1);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn apply_accumulated<O: Optimizer<T>>(&mut self, optimizer: &mut O) -> Result<T> {
        data_parallel_apply(self, optimizer, &crate::distributed::SingleProcess)
    }

    /// The loss of a batch in inference mode (no dropout, no update, no penalty).
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let value = net.evaluate_loss(x, &labels[..], &loss)?;
    /// assert_eq!(value, net.evaluate_loss(x, &labels[..], &loss)?); // no update, no dropout
    /// assert!(net.evaluate_loss(x, &[0usize][..], &loss).is_err()); // one label for two samples
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn evaluate_loss<'a, L, Y>(
        &self,
        x: impl Into<TensorRef<'a, T, Self::Input>>,
        target: &Y,
        loss: &L,
    ) -> Result<T>
    where
        L: Loss<T>,
        Y: AsRef<L::Target> + ?Sized,
    {
        let target = target.as_ref();
        let x = x.into();
        Self::SPEC.check_input(x.as_slice())?;
        let output = self.forward(x);
        loss.evaluate(
            output.as_slice(),
            target,
            output_layout(Self::SPEC, x.batch()),
            None,
        )
    }

    /// The parameters, by name or as one buffer.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let params = net.params();
    /// assert_eq!(params.as_slice().len(), Net::<f64>::PARAM_COUNT); // 4·3 + 4 + 2·4 + 2
    /// assert_eq!(params.get("fc.weight").unwrap().len(), 12); // [out, in], as PyTorch
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn params(&self) -> ParamSet<'_, T> {
        ParamSet {
            data: &self.state(SEALED).params,
            table: Self::SPEC.params,
        }
    }

    /// The parameter buffer, mutably (PyTorch's layout, in [`ModelSpec::params`] order).
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// net.params_mut().fill(0.0);
    /// assert_eq!(net.forward(x).as_slice(), [0.0; 4]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn params_mut(&mut self) -> &mut [T] {
        let state = self.state_mut(SEALED);
        state.params_replaced();
        &mut state.params
    }

    /// Replaces every parameter from one buffer of [`ModelSpec::param_count`] values.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let trained = Net::<f64>::new(9).params().as_slice().to_vec();
    /// net.set_params(&trained)?;
    /// assert_eq!(net.params().as_slice(), trained);
    /// assert!(net.set_params(&trained[1..]).is_err());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn set_params(&mut self, values: &[T]) -> Result<()> {
        let state = self.state_mut(SEALED);
        state.params_replaced();
        replace_all(&mut state.params, values)
    }

    /// Replaces every non-trainable buffer (batch norm's running statistics, in
    /// [`ModelSpec::buffers`] order) from one buffer of [`ModelSpec::buffer_count`]
    /// values, such as a copy of [`buffers`](Self::buffers) taken earlier.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// kiln::model! { struct Normed { input: [3], bn: BatchNorm1d, out: Dense(2) } }
    /// let mut normed = Normed::<f64>::new(0);
    /// let saved = normed.buffers().as_slice().to_vec(); // running mean, variance, count
    /// normed.train_step(x, &labels[..], &loss, &mut Sgd::new(0.1))?; // moves them
    /// normed.set_buffers(&saved)?;
    /// assert_eq!(normed.buffers().as_slice(), saved);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn set_buffers(&mut self, values: &[T]) -> Result<()> {
        replace_all(&mut self.state_mut(SEALED).buffers, values)
    }

    /// Trains on `train` as Keras' `fit` does; see [`train::fit`](crate::train::fit).
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let data = kiln::data::Dataset::<f64, Shape1<3>>::new(x.as_slice().to_vec(), labels.to_vec(), Some(2))?;
    /// let config = FitConfig::new(20, 2).progress(Progress::Silent);
    /// let history = net.fit(&data, None, &loss, &mut Adam::new(1e-2), &config)?;
    /// assert!(history.epochs[19].loss < history.epochs[0].loss);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn fit<L, O, Y>(
        &mut self,
        train: &crate::data::Dataset<T, Self::Input, Y>,
        validation: Option<&crate::data::Dataset<T, Self::Input, Y>>,
        loss: &L,
        optimizer: &mut O,
        config: &crate::train::FitConfig,
    ) -> Result<crate::train::History>
    where
        Self: Send,
        L: Loss<T, Target = [Y]> + Sync,
        O: Optimizer<T> + Send,
        Y: crate::data::Target,
    {
        crate::train::fit(self, train, validation, loss, optimizer, config)
    }

    /// [`fit`](Self::fit) with callbacks of the caller's (see
    /// [`train::Callback`](crate::train::Callback)), run after the built-ins.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let data = kiln::data::Dataset::<f64, Shape1<3>>::new(x.as_slice().to_vec(), labels.to_vec(), Some(2))?;
    /// let config = FitConfig::new(20, 2).progress(Progress::Silent);
    /// let log = dir.join("kiln-doc-model-fit.csv");
    /// net.fit_with_callbacks(&data, None, &loss, &mut Adam::new(1e-2), &config, &mut [&mut CsvLogger::new(&log)])?;
    /// assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 21);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn fit_with_callbacks<L, O, Y>(
        &mut self,
        train: &crate::data::Dataset<T, Self::Input, Y>,
        validation: Option<&crate::data::Dataset<T, Self::Input, Y>>,
        loss: &L,
        optimizer: &mut O,
        config: &crate::train::FitConfig,
        callbacks: &mut [&mut (dyn crate::train::Callback<T, Self> + Send)],
    ) -> Result<crate::train::History>
    where
        Self: Send + Sized,
        L: Loss<T, Target = [Y]> + Sync,
        O: Optimizer<T> + Send,
        Y: crate::data::Target,
    {
        crate::train::fit_with_callbacks(
            self, train, validation, loss, optimizer, config, callbacks,
        )
    }

    /// Loss and accuracy on `data` in batches; see [`train::evaluate`](crate::train::evaluate).
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let data = kiln::data::Dataset::<f64, Shape1<3>>::new(x.as_slice().to_vec(), labels.to_vec(), Some(2))?;
    /// let scores = net.evaluate(&data, &loss, 1)?;
    /// assert_eq!(scores.samples, 2);
    /// assert!((scores.loss - net.evaluate_loss(x, &labels[..], &loss)?).abs() < 1e-12);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn evaluate<L, Y>(
        &mut self,
        data: &crate::data::Dataset<T, Self::Input, Y>,
        loss: &L,
        batch_size: usize,
    ) -> Result<crate::train::Evaluation>
    where
        L: Loss<T, Target = [Y]>,
        Y: crate::data::Target,
    {
        crate::train::evaluate(self, data, loss, batch_size)
    }

    /// Outputs for every sample of `x`, in batches; see [`train::predict`](crate::train::predict).
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let outputs = net.predict(x, 1); // one sample at a time, joined
    /// assert_eq!(outputs, net.forward(x));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn predict<'a>(
        &mut self,
        x: impl Into<TensorRef<'a, T, Self::Input>>,
        batch_size: usize,
    ) -> Tensor<T, Self::Output> {
        crate::train::predict(self, x, batch_size)
    }

    /// Saves the parameters as safetensors with PyTorch's names and layouts, atomically
    /// (a temporary file renamed over `path`).
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let path = dir.join("kiln-doc-net.safetensors");
    /// net.save(&path)?;
    /// let mut copy = Net::<f64>::new(1);
    /// copy.load(&path)?;
    /// assert_eq!(copy.params().as_slice(), net.params().as_slice());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        crate::io::save(
            Self::SPEC,
            &self.state(SEALED).params,
            &self.state(SEALED).buffers,
            path.as_ref(),
        )
    }

    /// The model as an ONNX model (IR 8, opset 18) with its current weights, for
    /// inference in ONNX Runtime and other engines: one input `input` and one output
    /// `output` of the model's shapes with a free batch dimension, the weights under
    /// their safetensors names. Built from the graph the macro knows, not by tracing.
    /// [`Error::OnnxUnsupported`] names the first layer the exporter does not cover;
    /// the [`onnx`](crate::onnx) module lists what it does.
    ///
    /// (An example is in the `kiln` crate's documentation.)
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let bytes = net.to_onnx()?; // f64 weights, as the model trains
    /// assert!(bytes.len() > 8 * Net::<f64>::PARAM_COUNT);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn to_onnx(&self) -> Result<Vec<u8>> {
        crate::onnx::to_onnx(
            Self::SPEC,
            &self.state(SEALED).params,
            &self.state(SEALED).buffers,
        )
    }

    /// [`to_onnx`](Self::to_onnx) with float32 weights whatever the model trains in:
    /// ONNX Runtime's CPU kernels cover float64 for few operators (no `Conv`), so a
    /// model trained in f64 deploys through this.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert!(net.to_onnx_f32()?.len() < net.to_onnx()?.len()); // 4-byte weights
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn to_onnx_f32(&self) -> Result<Vec<u8>> {
        let state = self.state(SEALED);
        let narrow =
            |values: &[T]| -> Vec<f32> { values.iter().map(|v| v.to_f64() as f32).collect() };
        crate::onnx::to_onnx::<f32>(Self::SPEC, &narrow(&state.params), &narrow(&state.buffers))
    }

    /// Writes [`to_onnx`](Self::to_onnx) to `path`, atomically (a temporary file
    /// renamed over it, as [`save`](Self::save) does); nothing is written on an error.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let path = dir.join("kiln-doc-net.onnx");
    /// net.save_onnx(&path)?;
    /// assert_eq!(std::fs::read(&path).unwrap(), net.to_onnx()?);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn save_onnx(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let bytes = self.to_onnx()?;
        crate::io::write_atomically(path.as_ref(), &bytes)
    }

    /// Loads parameters saved by [`save`](Self::save) or by PyTorch
    /// (`safetensors.torch.save_file(module.state_dict(), path)`). Every missing, extra
    /// or wrongly shaped tensor is listed in the error, and the model is left unchanged.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let path = dir.join("kiln-doc-load.safetensors");
    /// Net::<f64>::new(5).save(&path)?;
    /// net.load(&path)?;
    /// assert_eq!(net.params().as_slice(), Net::<f64>::new(5).params().as_slice());
    /// kiln::model! { struct Wider { input: [3], fc: Dense(5), Relu, out: Dense(2) } }
    /// let before = Wider::<f64>::new(0);
    /// let mut wider = before.clone();
    /// assert!(wider.load(&path).is_err()); // fc.weight is [4, 3] in the file
    /// assert_eq!(wider.params().as_slice(), before.params().as_slice()); // unchanged
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn load(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let state = self.state_mut(SEALED);
        state.params_replaced();
        crate::io::load(
            Self::SPEC,
            &mut state.params,
            &mut state.buffers,
            path.as_ref(),
        )
    }

    /// [`load`](Self::load) with options: PyTorch's `strict=False` (tensors the file
    /// lacks keep their values, tensors the model lacks are left out) and prefix
    /// renames, for a checkpoint whose model differs (a new head, a backbone saved on
    /// its own). Returns which tensors were loaded, missing and unexpected. A tensor of
    /// the wrong shape, of a non-float type or holding a NaN or infinity is refused by
    /// name, as is (in strict mode) a missing or unexpected one; the model is then left
    /// unchanged.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// use kiln::io::LoadOptions;
    /// kiln::model! { struct Backbone { input: [3], fc: Dense(4), Relu } }
    /// kiln::model! { struct Classifier { input: [3], fc: Dense(4), Relu, head: Dense(2) } }
    /// let path = std::env::temp_dir().join("kiln-doc-backbone.safetensors");
    /// Backbone::<f32>::new(7).save(&path)?;
    /// let mut classifier = Classifier::<f32>::new(0);
    /// assert!(classifier.load(&path).is_err()); // strict: the file has no head
    /// let report = classifier.load_with(&path, &LoadOptions::new().strict(false))?;
    /// assert_eq!(report.loaded, ["fc.bias", "fc.weight"]);
    /// assert_eq!(report.missing, ["head.bias", "head.weight"]); // kept their values
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn load_with(
        &mut self,
        path: impl AsRef<std::path::Path>,
        options: &crate::io::LoadOptions,
    ) -> Result<crate::io::LoadReport> {
        let state = self.state_mut(SEALED);
        state.params_replaced();
        crate::io::load_with(
            Self::SPEC,
            &mut state.params,
            &mut state.buffers,
            path.as_ref(),
            options,
        )
    }

    /// [`load_with`](Self::load_with) of a safetensors file's bytes already in memory
    /// (`include_bytes!`, a download), with the same checks.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// use kiln::io::LoadOptions;
    /// let path = dir.join("kiln-doc-load-bytes.safetensors");
    /// Net::<f64>::new(5).save(&path)?;
    /// let bytes = std::fs::read(&path).unwrap();
    /// let report = net.load_bytes(&bytes, &LoadOptions::new())?;
    /// assert_eq!(report.loaded, ["fc.bias", "fc.weight", "out.bias", "out.weight"]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn load_bytes(
        &mut self,
        bytes: &[u8],
        options: &crate::io::LoadOptions,
    ) -> Result<crate::io::LoadReport> {
        let state = self.state_mut(SEALED);
        state.params_replaced();
        crate::io::load_bytes(
            Self::SPEC,
            &mut state.params,
            &mut state.buffers,
            bytes,
            options,
        )
    }

    /// The non-trained state (batch norm's running statistics), by name.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert!(net.buffers().as_slice().is_empty()); // no batch norm, no buffers
    /// kiln::model! { struct Normed { input: [3], bn: BatchNorm1d, out: Dense(2) } }
    /// assert_eq!(Normed::<f64>::new(0).buffers().get("bn.running_var").unwrap(), [1.0; 3]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn buffers(&self) -> ParamSet<'_, T> {
        ParamSet {
            data: &self.state(SEALED).buffers,
            table: Self::SPEC.buffers,
        }
    }

    /// The gradients of the last [`backward`](Self::backward),
    /// [`value_and_grad`](Self::value_and_grad) or [`train_step`](Self::train_step),
    /// laid out like the parameters (clipped, if the step clipped them; a failed step's
    /// too, which shows where a NaN came from).
    ///
    /// [`Error::GradientsNotStored`] before any backward pass, and after a training
    /// step with plain SGD and nothing between the gradients and the update, which
    /// adds its dense layers' updates straight into the weights without storing their
    /// gradients (see [`train_step`](Self::train_step)).
    ///
    /// (An example is in the `kiln` crate's documentation.)
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert!(net.grads().is_err()); // no backward pass yet
    /// net.value_and_grad(x, &labels[..], &loss)?;
    /// assert_eq!(net.grads()?.as_slice().len(), Net::<f64>::PARAM_COUNT);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn grads(&self) -> Result<Grads<'_, T>> {
        let state = self.state(SEALED);
        match state.grads_stored {
            StoredGrads::All => {}
            StoredGrads::Never => return Err(Error::GradientsNotStored { step: None }),
            StoredGrads::AppliedAt(step) => {
                return Err(Error::GradientsNotStored { step: Some(step) })
            }
        }
        Ok(ParamSet {
            data: &state.grads,
            table: Self::SPEC.params,
        })
    }

    /// Sets the L1/L2 penalty that [`train_step`](Self::train_step) adds.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let plain = net.evaluate_loss(x, &labels[..], &loss)?;
    /// net.set_regularization(Regularization { l1: 0.0, l2: 1e-2 });
    /// let step = net.clone().train_step(x, &labels[..], &loss, &mut Sgd::new(0.0))?;
    /// assert!(step > plain); // the penalty is part of the step's loss
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn set_regularization(&mut self, regularization: Regularization) {
        self.state_mut(SEALED).regularization = regularization;
    }

    /// The L1/L2 penalty in force.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert_eq!(net.regularization(), Regularization::NONE);
    /// net.set_regularization(Regularization::l1(1e-4));
    /// assert_eq!(net.regularization().l1, 1e-4);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn regularization(&self) -> Regularization {
        self.state(SEALED).regularization
    }

    /// Sets the gradient clipping that [`train_step`](Self::train_step),
    /// [`apply_gradients`](Self::apply_gradients) and so `fit` apply before the
    /// optimiser reads the gradients (after a regularisation penalty's gradient is
    /// added, as if it were part of the loss), or `None` for none: Keras's
    /// `global_clipnorm` and `clipvalue`, PyTorch's `clip_grad_norm_` and
    /// `clip_grad_value_` called before every `optimizer.step()`. Fails on a bound
    /// that is not a positive finite number, keeping the clipping in force.
    ///
    /// With clipping, plain SGD no longer updates inside the backward pass (the
    /// gradients must all exist before their norm does): a step writes every gradient
    /// out, as the other optimisers' steps do.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// net.set_grad_clip(Some(GradClip::Norm(1e-3)))?;
    /// net.train_step(x, &labels[..], &loss, &mut Sgd::new(0.1))?;
    /// assert!(net.grads()?.as_slice().iter().map(|g| g * g).sum::<f64>().sqrt() <= 1e-3 + 1e-12);
    /// assert!(net.set_grad_clip(Some(GradClip::Value(-1.0))).is_err());
    /// assert_eq!(net.grad_clip(), Some(GradClip::Norm(1e-3))); // kept
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn set_grad_clip(&mut self, clip: Option<GradClip>) -> Result<()> {
        let clip = clip.map(GradClip::validate).transpose()?;
        self.state_mut(SEALED).clip = clip;
        Ok(())
    }

    /// The gradient clipping in force.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert_eq!(net.grad_clip(), None);
    /// net.set_grad_clip(Some(GradClip::Value(0.5)))?;
    /// assert_eq!(net.grad_clip(), Some(GradClip::Value(0.5)));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn grad_clip(&self) -> Option<GradClip> {
        self.state(SEALED).clip
    }

    /// Freezes the parameter tensors `pattern` names, as PyTorch's
    /// `requires_grad_(False)` and Keras's `trainable = False`: a tensor's name
    /// (`fc1.weight`), a layer or block (`fc1`, `layer1.0`: every tensor under it) or a
    /// glob with `*` (`conv*`, `*.bias`). Returns how many tensors it names, or fails
    /// if none.
    ///
    /// Frozen tensors get no update from any optimiser (put back bit for bit after each
    /// step, so weight decay and momentum do not move them) and a zero gradient, and
    /// are left out of clipping's norm. A backward pass skips every step before the
    /// first trainable tensor: those layers compute no gradient at all (unless the
    /// input's gradient is asked for). Batch norm's running statistics of a frozen
    /// layer still follow the batches in training mode, as in PyTorch.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert_eq!(net.freeze("fc")?, 2); // fc.weight and fc.bias
    /// let frozen = net.params().get("fc.weight").unwrap().to_vec();
    /// net.train_step(x, &labels[..], &loss, &mut Adam::new(1e-2))?;
    /// assert_eq!(net.params().get("fc.weight").unwrap(), frozen);
    /// assert!(net.freeze("conv*").is_err()); // names nothing
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn freeze(&mut self, pattern: &str) -> Result<usize> {
        self.state_mut(SEALED).set_frozen(Self::SPEC, pattern, true)
    }

    /// Unfreezes the tensors `pattern` names (see [`freeze`](Self::freeze)).
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// net.freeze("*")?;
    /// assert_eq!(net.unfreeze("*.bias")?, 2);
    /// assert_eq!((net.is_frozen("out.bias"), net.is_frozen("out.weight")), (Some(false), Some(true)));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn unfreeze(&mut self, pattern: &str) -> Result<usize> {
        self.state_mut(SEALED)
            .set_frozen(Self::SPEC, pattern, false)
    }

    /// Scales the learning rate of the tensors `pattern` names (as for
    /// [`freeze`](Self::freeze)) by `scale`, as PyTorch's parameter groups and Keras's
    /// per-layer rates do: `set_lr_scale("backbone", 0.1)` trains a pre-trained
    /// backbone at a tenth of the head's rate. Their updates, whatever the optimiser,
    /// are `scale` times what the optimiser's rate gives (every update here is
    /// proportional to the rate, decoupled weight decay included). Returns how many
    /// tensors it names; fails if none, or on a scale that is negative or not finite.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert_eq!(net.set_lr_scale("fc", 0.1)?, 2);
    /// assert_eq!(net.lr_scale("fc.bias"), Some(0.1));
    /// assert!(net.set_lr_scale("out", -1.0).is_err());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn set_lr_scale(&mut self, pattern: &str, scale: f64) -> Result<usize> {
        self.state_mut(SEALED)
            .set_lr_scale(Self::SPEC, pattern, scale)
    }

    /// The learning-rate scale of the tensor called `name`; `None` if the model has
    /// none.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert_eq!(net.lr_scale("out.weight"), Some(1.0));
    /// assert_eq!(net.lr_scale("nothing.weight"), None);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn lr_scale(&self, name: &str) -> Option<f64> {
        Self::SPEC
            .params
            .iter()
            .position(|p| p.is_named(name))
            .map(|i| self.state(SEALED).lr_scales[i])
    }

    /// Whether the tensor called `name` is frozen; `None` if the model has none.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert_eq!(net.is_frozen("fc.weight"), Some(false));
    /// net.freeze("fc.weight")?;
    /// assert_eq!(net.is_frozen("fc.weight"), Some(true));
    /// assert_eq!(net.is_frozen("fc.kernel"), None);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn is_frozen(&self, name: &str) -> Option<bool> {
        Self::SPEC
            .params
            .iter()
            .position(|p| p.is_named(name))
            .map(|i| self.state(SEALED).frozen[i])
    }

    /// The global L2 norm of the last clipped gradients, before clipping (what
    /// PyTorch's `clip_grad_norm_` returns): recorded by every step while a
    /// [`set_grad_clip`](Self::set_grad_clip) is in force and by
    /// [`clip_grad_norm`](Self::clip_grad_norm); `None` before any.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert_eq!(net.grad_norm(), None);
    /// net.value_and_grad(x, &labels[..], &loss)?;
    /// let norm = net.clip_grad_norm(1e6)?; // a bound that clips nothing
    /// assert_eq!(net.grad_norm(), Some(norm));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn grad_norm(&self) -> Option<f64> {
        self.state(SEALED).grad_norm
    }

    /// Scales the gradients of the last backward pass so that their global L2 norm is
    /// at most `max_norm`, and returns the norm before (PyTorch's `clip_grad_norm_`),
    /// for a custom loop between `backward` and
    /// [`apply_gradients`](Self::apply_gradients). Fails, changing nothing, without
    /// fresh gradients, on a bad bound, or if the norm is not finite.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// net.value_and_grad(x, &labels[..], &loss)?;
    /// let before = net.clip_grad_norm(1e-2)?;
    /// let after = net.grads()?.as_slice().iter().map(|g| g * g).sum::<f64>().sqrt();
    /// // PyTorch's coefficient, max_norm / (norm + 1e-6), leaves the norm just below 1e-2.
    /// assert!(before > 1e-2 && after <= 1e-2 && after > 1e-2 * (1.0 - 1e-5));
    /// net.apply_gradients(&mut Sgd::new(0.1))?;
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64> {
        clip_pending(self.state_mut(SEALED), GradClip::Norm(max_norm))
    }

    /// Clamps the gradients of the last backward pass to `[-value, value]` (PyTorch's
    /// `clip_grad_value_`) and returns their global L2 norm before; as
    /// [`clip_grad_norm`](Self::clip_grad_norm) otherwise.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// net.value_and_grad(x, &labels[..], &loss)?;
    /// net.clip_grad_value(1e-3)?;
    /// assert!(net.grads()?.as_slice().iter().all(|g| g.abs() <= 1e-3));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn clip_grad_value(&mut self, value: f64) -> Result<f64> {
        clip_pending(self.state_mut(SEALED), GradClip::Value(value))
    }

    /// Turns the non-finite guard on (the default) or off. With it on, a training step
    /// checks every gradient before the optimiser runs and fails with
    /// [`Error::NonFiniteParameterGradient`] — parameters, buffers and the optimiser's
    /// state as they were — if one is NaN or infinite (a NaN input is refused before
    /// that, a non-finite loss after the forward pass). Off, the check is skipped, and
    /// plain SGD makes its update inside the backward pass (see the design notes):
    /// faster, but a gradient that overflows then reaches the weights.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// net.set_nonfinite_guard(false); // a faster plain-SGD step, unchecked gradients
    /// assert!(!net.nonfinite_guard());
    /// net.train_step(x, &labels[..], &loss, &mut Sgd::new(0.1))?;
    /// net.set_nonfinite_guard(true);
    /// assert!(net.nonfinite_guard());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn set_nonfinite_guard(&mut self, on: bool) {
        self.state_mut(SEALED).guard = on;
    }

    /// Whether the non-finite guard is on.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert!(net.nonfinite_guard()); // on by default
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn nonfinite_guard(&self) -> bool {
        self.state(SEALED).guard
    }

    /// Number of successful training steps so far.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// assert_eq!(net.steps(), 0);
    /// net.train_step(x, &labels[..], &loss, &mut Sgd::new(0.1))?;
    /// let _ = net.train_step(x, &[9usize, 9][..], &loss, &mut Sgd::new(0.1)); // fails: not counted
    /// assert_eq!(net.steps(), 1);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn steps(&self) -> u64 {
        self.state(SEALED).steps
    }

    /// A Keras-style table of the layers, their output shapes and parameter counts.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
    /// # let mut net = Net::<f64>::new(0);
    /// # let x = TensorRef::<f64, Shape1<3>>::new(&[0.5, -1.0, 2.0, 1.0, 0.0, -0.5])?;
    /// # let labels = [1usize, 0];
    /// # let loss = CrossEntropy::default();
    /// # let dir = std::env::temp_dir();
    /// let summary = Net::<f64>::summary();
    /// println!("{summary}"); // layers, output shapes, parameter counts
    /// assert!(summary.to_string().contains("26"));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    fn summary() -> Summary {
        Summary(Self::SPEC)
    }
}

/// How [`run_in_workspace`] runs a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// Inference, reading the input where it is.
    Infer,
    /// Training, reading the input where it is (the caller runs backward with it).
    Train,
    /// Training, with the input copied into node 0 for a later [`Model::backward`].
    KeepInput,
}

/// The backward pass from dL/d`output` after [`Model::forward_train`], with the
/// input's gradient if `to_input`.
fn backward_from<T: Float, M: Model<T>>(
    state: &mut ModelState<T>,
    grad_output: &[T],
    to_input: bool,
) -> Result<()> {
    if !state.workspace.input_held {
        return Err(Error::Mismatch(
            "backward needs forward_train just before it: the last pass was a training \
             step, an inference or a backward pass (which uses up the forward pass's \
             saved values), or there was none"
                .into(),
        ));
    }
    let node = M::SPEC.output_node;
    let expected = state.workspace.value(node).len();
    if grad_output.len() != expected || expected == 0 {
        return Err(Error::TargetLength {
            expected,
            actual: grad_output.len(),
        });
    }
    state.workspace.grad_mut(node).copy_from_slice(grad_output);
    state.prepare_backward(M::SPEC, to_input);
    let mut pass = Pass::new(&mut state.workspace, None);
    M::backward_pass(
        &mut state.params,
        &mut state.grads,
        &mut pass,
        None,
        to_input,
        SEALED,
    );
    state.zero_frozen_grads(M::SPEC);
    // Convolutions and recurrent layers overwrite what they saved in the forward pass:
    // a second backward pass would read scratch.
    state.workspace.input_held = false;
    state.grads_pending = true;
    state.grads_stored = StoredGrads::All;
    Ok(())
}

/// A generator's whole state as words: its seed (4), stream and word position (2).
fn rng_words(rng: &Rng) -> [u64; 7] {
    let seed = rng.get_seed();
    let seed = |i: usize| u64::from_le_bytes(seed[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    let word = rng.get_word_pos();
    let stream = rng.get_stream();
    [
        seed(0),
        seed(1),
        seed(2),
        seed(3),
        stream,
        word as u64,
        (word >> 64) as u64,
    ]
}

/// The generator [`rng_words`] describes.
fn rng_from_words(words: [u64; 7]) -> Rng {
    let mut seed = [0_u8; 32];
    for (chunk, value) in seed.chunks_exact_mut(8).zip(&words[..4]) {
        chunk.copy_from_slice(&value.to_le_bytes());
    }
    let mut rng = <Rng as rand_core::SeedableRng>::from_seed(seed);
    rng.set_stream(words[4]);
    rng.set_word_pos(u128::from(words[5]) | (u128::from(words[6]) << 64));
    rng
}

/// `dst = values`, or an error (and `dst` untouched) if the lengths differ.
fn replace_all<T: Copy>(dst: &mut [T], values: &[T]) -> Result<()> {
    if values.len() != dst.len() {
        return Err(Error::ParameterLength {
            expected: dst.len(),
            actual: values.len(),
        });
    }
    dst.copy_from_slice(values);
    Ok(())
}

/// The training-mode forward pass of a checked batch, then the loss, with its
/// gradient left in the output node's gradient; a non-finite loss is an error.
fn forward_and_loss<T: Float, M: Model<T>, L: Loss<T>>(
    state: &mut ModelState<T>,
    x: TensorRef<'_, T, M::Input>,
    target: &L::Target,
    loss: &L,
    run: Run,
) -> Result<T> {
    state.input_max = M::SPEC.checked_input_max(x.as_slice())?.to_f64();
    let layout = output_layout(M::SPEC, x.batch());
    state.buffers_before.copy_from_slice(&state.buffers);
    run_in_workspace::<T, M>(state, x, run);
    let evaluated = state.check_buffers(M::SPEC).and_then(|()| {
        let (output, grad_output) = state.workspace.value_and_grad(M::SPEC.output_node);
        let value = loss.evaluate(output, target, layout, Some(grad_output))?;
        if !value.is_finite() {
            return Err(Error::NonFiniteLoss {
                loss: value.to_f64(),
                step: state.steps,
            });
        }
        Ok(value)
    });
    if evaluated.is_err() {
        state.restore_buffers();
    }
    evaluated
}

/// The rest of a training step after its forward pass and loss (`value`): the
/// backward pass and the update, guarded as [`Model::train_step`] says. `x` is the
/// batch the forward pass read.
fn step_after_forward<T: Float, M: Model<T>, O: Optimizer<T>>(
    state: &mut ModelState<T>,
    x: &[T],
    mut value: T,
    optimizer: &mut O,
) -> Result<T> {
    let spec = M::SPEC;
    let non_finite = |value: T, steps| Error::NonFiniteLoss {
        loss: value.to_f64(),
        step: steps,
    };
    state.prepare_backward(spec, false);
    // Plain SGD with nothing to do between the gradients and the update (a
    // penalty, clipping, frozen or scaled tensors): the update is made inside the
    // backward pass.
    let plain = !state.regularization.is_active() && state.clip.is_none() && !state.holds_any();
    let linear = optimizer.linear_step().filter(|_| plain).map(T::from_f64);
    // Guarded, the dense weights' products wait until everything else is checked,
    // unless the gradients of a dense chain are bounded before the backward pass.
    let chained =
        state.guard && linear.is_some_and(|rate| state.chain_bounded(spec, x, rate.to_f64()));
    let (update, deferred) = if state.guard && !chained {
        (None, linear)
    } else {
        (linear, None)
    };
    // Only the stored path keeps every gradient (the deferred one when its products
    // are formed as gradients, below).
    state.grads_stored = if update.is_none() && deferred.is_none() {
        StoredGrads::All
    } else {
        StoredGrads::AppliedAt(state.steps)
    };
    let mut pass = Pass::new(&mut state.workspace, Some(x));
    pass.deferring = deferred.is_some();
    // The guard bounds the dense weights' gradients by their operands: the dense
    // layers take those operands' largest magnitudes as they pass.
    pass.noting = state.guard
        && update.is_none()
        && state.clip.is_none()
        && !state.regularization.is_active();
    M::backward_pass(
        &mut state.params,
        &mut state.grads,
        &mut pass,
        update,
        false,
        SEALED,
    );
    if !chained {
        // Written by something other than a step that keeps the weight bounds.
        state.params_replaced();
    }
    if let Some(rate) = deferred {
        state.guarded_linear_step(spec, rate, x)?;
    } else if update.is_none() {
        if state.regularization.is_active() {
            for p in spec.params.iter().filter(|p| p.regularized) {
                value += state
                    .regularization
                    .apply(&state.params[p.range()], &mut state.grads[p.range()]);
            }
            if !value.is_finite() {
                return Err(non_finite(value, state.steps));
            }
        }
        state.zero_frozen_grads(spec);
        // Guarded and not clipping (whose norm guards): the dense weights' gradients
        // are finite by their operands' bound, unless a penalty was added to them;
        // the rest is checked exactly.
        if state.guard && state.clip.is_none() {
            let bounded = !state.regularization.is_active() && state.dense_bounded(spec, x, 1.0);
            if !bounded {
                state.check_gradients(spec)?;
            }
        }
        if let Some(clip) = state.clip {
            state.grad_norm = Some(clip.apply(&mut state.grads)?);
        }
        state.step_keeping_frozen(spec, optimizer)?;
    }
    state.grads_pending = false;
    state.steps += 1;
    Ok(value)
}

/// Forward in training mode, the loss and its gradient, then the backward pass.
fn value_and_grad<T: Float, M: Model<T>, L: Loss<T>>(
    state: &mut ModelState<T>,
    x: TensorRef<'_, T, M::Input>,
    target: &L::Target,
    loss: &L,
    to_input: bool,
) -> Result<T> {
    let value = forward_and_loss::<T, M, L>(state, x, target, loss, Run::KeepInput)?;
    state.prepare_backward(M::SPEC, to_input);
    let mut pass = Pass::new(&mut state.workspace, None);
    M::backward_pass(
        &mut state.params,
        &mut state.grads,
        &mut pass,
        None,
        to_input,
        SEALED,
    );
    state.zero_frozen_grads(M::SPEC);
    state.workspace.input_held = false;
    state.grads_pending = true;
    state.grads_stored = StoredGrads::All;
    Ok(value)
}

/// One data-parallel training step on this rank's part of a global batch (see
/// [`crate::distributed`]): the forward pass and the loss, the loss gradient weighted
/// by the part's share, the backward pass, one all-reduce of the gradients, then the
/// update as [`Model::apply_gradients`] makes it. Returns the loss of the part plus
/// the regularisation penalty, as [`Model::train_step`] does.
pub(crate) fn data_parallel_step<T, M, L, O>(
    model: &mut M,
    x: TensorRef<'_, T, M::Input>,
    target: &L::Target,
    loss: &L,
    optimizer: &mut O,
    part: crate::data::BatchPart,
    comm: &dyn crate::distributed::Communicator,
) -> Result<T>
where
    T: Float,
    M: Model<T>,
    L: Loss<T>,
    O: Optimizer<T>,
{
    // The all-reduce sums the parts: each weighs as its rows count in the whole.
    let weight = match loss.reduction() {
        Reduction::Mean => part.rows as f64 / part.total as f64,
        Reduction::Sum => f64::from(u8::from(part.rows > 0)),
    };
    let value = part_gradients::<T, M, L>(model.state_mut(SEALED), x, target, loss, part, weight)?;
    model.all_reduce_gradients(comm, 1.0)?;
    let penalty = model.apply_gradients(optimizer)?;
    Ok(value + penalty)
}

/// The forward and backward passes of this rank's part of a global batch, the loss
/// gradient scaled by `weight` first. Returns the part's loss.
fn part_gradients<T: Float, M: Model<T>, L: Loss<T>>(
    state: &mut ModelState<T>,
    x: TensorRef<'_, T, M::Input>,
    target: &L::Target,
    loss: &L,
    part: crate::data::BatchPart,
    weight: f64,
) -> Result<T> {
    let spec = M::SPEC;
    let before = state.workspace.shard.replace((part.first, part.total));
    let value = forward_and_loss::<T, M, L>(state, x, target, loss, Run::Train);
    state.workspace.shard = before;
    let value = value?;
    if weight != 1.0 {
        let weight = T::from_f64(weight);
        for g in state.workspace.grad_mut(spec.output_node) {
            *g *= weight;
        }
    }
    state.prepare_backward(spec, false);
    let mut pass = Pass::new(&mut state.workspace, Some(x.as_slice()));
    M::backward_pass(
        &mut state.params,
        &mut state.grads,
        &mut pass,
        None,
        false,
        SEALED,
    );
    // (Frozen tensors' gradients are zeroed by the update, after the sum.)
    state.grads_pending = true;
    state.grads_stored = StoredGrads::All;
    Ok(value)
}

/// Gradient accumulation in data-parallel training: this rank's part of a global
/// micro-batch adds its gradients to those accumulated as
/// [`Model::accumulate_gradients`] does, counting the global micro-batch's samples;
/// [`data_parallel_apply`] then sums them across ranks. Returns the part's loss.
pub(crate) fn data_parallel_accumulate<T, M, L>(
    model: &mut M,
    x: TensorRef<'_, T, M::Input>,
    target: &L::Target,
    loss: &L,
    part: crate::data::BatchPart,
) -> Result<T>
where
    T: Float,
    M: Model<T>,
    L: Loss<T>,
{
    let reduction = loss.reduction();
    let state = model.state_mut(SEALED);
    state.check_accumulating(reduction)?;
    let value = part_gradients::<T, M, L>(state, x, target, loss, part, 1.0)?;
    state.accumulate(reduction, part.rows, part.total);
    Ok(value)
}

/// Sums the gradients accumulated on every rank (one process: takes them), divides
/// them by the micro-batches' samples (for mean-reduced losses) and steps as
/// [`Model::apply_gradients`] does ([`Model::apply_accumulated`]). Returns the
/// penalty.
pub(crate) fn data_parallel_apply<T, M, O>(
    model: &mut M,
    optimizer: &mut O,
    comm: &dyn crate::distributed::Communicator,
) -> Result<T>
where
    T: Float,
    M: Model<T>,
    O: Optimizer<T>,
{
    let state = model.state_mut(SEALED);
    let Some((samples, reduction)) = state.accumulated_over.take() else {
        return Err(Error::Mismatch(
            "apply_accumulated needs accumulate_gradients since the last step".into(),
        ));
    };
    crate::distributed::all_reduce_sum(comm, &state.accumulated, &mut state.grads)?;
    let divisor = match reduction {
        Reduction::Mean => T::from_f64(samples as f64),
        Reduction::Sum => T::ONE,
    };
    for g in state.grads.iter_mut() {
        *g /= divisor;
    }
    state.accumulated.fill(T::ZERO);
    state.grads_pending = true;
    state.grads_stored = StoredGrads::All;
    model.apply_gradients(optimizer)
}

impl<T: Float> ModelState<T> {
    /// Makes every rank's parameters, buffers and dropout generator rank 0's.
    pub(crate) fn broadcast_from_root(
        &mut self,
        comm: &dyn crate::distributed::Communicator,
    ) -> Result<()> {
        use crate::distributed::broadcast_values;
        broadcast_values(comm, &mut self.params)?;
        broadcast_values(comm, &mut self.buffers)?;
        let mut bytes: Vec<u8> = rng_words(&self.dropout_rng)
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        comm.broadcast(&mut bytes, 0)?;
        let mut words = [0_u64; 7];
        for (w, b) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        }
        self.dropout_rng = rng_from_words(words);
        self.params_replaced();
        Ok(())
    }

    /// An error if the micro-batches accumulated so far reduce otherwise than `reduction`.
    fn check_accumulating(&self, reduction: Reduction) -> Result<()> {
        match self.accumulated_over {
            Some((_, before)) if before != reduction => Err(Error::Mismatch(
                "the micro-batches of one accumulated step must use losses of one reduction".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Adds the gradients of a backward pass over `rows` samples to the accumulation
    /// (weighted by `rows` for a mean-reduced loss, so that the sum is over samples)
    /// and counts `samples` towards the divisor.
    fn accumulate(&mut self, reduction: Reduction, rows: usize, samples: usize) {
        self.grads_pending = false;
        if self.accumulated.len() != self.grads.len() {
            self.accumulated = vec![T::ZERO; self.grads.len()];
        }
        let weight = match reduction {
            Reduction::Mean => T::from_f64(rows as f64),
            Reduction::Sum => T::from_f64(f64::from(u8::from(rows > 0))),
        };
        crate::optim::add_scaled(&mut self.accumulated, &self.grads, weight);
        let (before, _) = self.accumulated_over.unwrap_or((0, reduction));
        self.accumulated_over = Some((before + samples, reduction));
    }

    /// A hash of what shapes a step besides the parameters and the optimiser: the
    /// regulariser, clipping, frozen tensors, per-tensor rate scales and the guard.
    pub(crate) fn settings_hash(&self) -> u64 {
        let clip = match self.clip {
            None => [0, 0],
            Some(GradClip::Norm(v)) => [1, v.to_bits()],
            Some(GradClip::Value(v)) => [2, v.to_bits()],
        };
        let regularization = [
            self.regularization.l1.to_bits(),
            self.regularization.l2.to_bits(),
        ];
        crate::distributed::hash_words(
            clip.into_iter()
                .chain(regularization)
                .chain(self.frozen.iter().map(|&f| u64::from(f)))
                .chain(self.lr_scales.iter().map(|s| s.to_bits()))
                .chain([u64::from(self.guard)]),
        )
    }

    /// A hash of the parameters' bits, equal on ranks that agree (batch norm's
    /// running statistics are per rank).
    pub(crate) fn params_hash(&self) -> u64 {
        crate::distributed::hash_values(&self.params)
    }
}

/// Runs the forward pass in the model's workspace; returns the outputs.
fn run_in_workspace<'s, T: Float, M: Model<T>>(
    state: &'s mut ModelState<T>,
    x: TensorRef<'_, T, M::Input>,
    run: Run,
) -> &'s [T] {
    let ws = &mut state.workspace;
    if run == Run::Infer {
        ws.prepare_inference(x.batch());
    } else {
        ws.prepare(x.batch());
    }
    ws.input_held = run == Run::KeepInput;
    let outside = if ws.input_held {
        ws.value_mut(0).copy_from_slice(x.as_slice());
        None
    } else {
        Some(x.as_slice())
    };
    let mode = if run == Run::Infer {
        Mode::Infer
    } else {
        Mode::Train(&mut state.dropout_rng)
    };
    let mut pass = Pass::new(ws, outside);
    M::forward_pass(&state.params, &mut state.buffers, &mut pass, mode, SEALED);
    state.workspace.value(M::SPEC.output_node)
}

fn output_layout(spec: &ModelSpec, batch: usize) -> OutputLayout {
    OutputLayout {
        batch,
        width: spec.output.last().copied().unwrap_or(1),
    }
}

/// The printable layer table of a model (see [`Model::summary`]).
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
/// let table = Net::<f32>::summary().to_string();
/// assert!(table.contains("Dense(4)") && table.contains("26"));
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Summary(pub &'static ModelSpec);

fn dims(d: &[usize]) -> String {
    let parts: Vec<String> = d.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spec = self.0;
        let rows: Vec<[String; 4]> = core::iter::once([
            "input".to_string(),
            "Input".to_string(),
            dims(spec.input),
            "0".to_string(),
        ])
        .chain(spec.layers.iter().map(|l| {
            [
                format!("{}{}", "  ".repeat(l.depth), l.name),
                l.kind.to_string(),
                dims(l.output),
                grouped(l.params as u64),
            ]
        }))
        .collect();
        let header = ["Layer", "Type", "Output shape", "Params"];
        let mut width = header.map(str::len);
        for row in &rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let total: usize = width.iter().sum::<usize>() + 3 * 3;
        writeln!(f, "Model: {}", spec.name)?;
        writeln!(f, "{}", "─".repeat(total))?;
        let line = |f: &mut fmt::Formatter<'_>, cells: [&str; 4]| {
            writeln!(
                f,
                "{:<w0$}   {:<w1$}   {:<w2$}   {:>w3$}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                w0 = width[0],
                w1 = width[1],
                w2 = width[2],
                w3 = width[3]
            )
        };
        line(f, header)?;
        writeln!(f, "{}", "═".repeat(total))?;
        for row in &rows {
            line(f, [&row[0], &row[1], &row[2], &row[3]])?;
        }
        writeln!(f, "{}", "═".repeat(total))?;
        writeln!(f, "Total params: {}", grouped(spec.param_count as u64))?;
        writeln!(f, "Trainable params: {}", grouped(spec.param_count as u64))?;
        write!(
            f,
            "Forward FLOPs per sample: {}",
            grouped(spec.flops_per_sample)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(101_770), "101,770");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }

    #[test]
    fn workspace_grows_once_and_keeps_nodes_apart() {
        static SPEC: ModelSpec = ModelSpec {
            name: "test",
            input: &[2],
            output: &[2],
            layers: &[],
            params: &[],
            param_count: 0,
            flops_per_sample: 0,
            buffers: &[],
            buffer_count: 0,
            fixed: 4,
            nodes: &[0, 2, 5, 7],
            output_node: 2,
            token_vocab: None,
            token_columns: &[],
            deferred: &[],
            dense_chain: false,
            input_ports: &[],
            output_ports: &[],
            onnx: crate::onnx::OnnxPlan::Unsupported { kind: "test" },
        };
        let mut ws = Workspace::<f32>::new(&SPEC);
        ws.prepare(3);
        assert_eq!(ws.value(1).len(), 9);
        ws.value_mut(1).fill(1.0);
        let mut pass = Pass::new(&mut ws, None);
        let io = pass.forward_io(1, 2, None);
        assert_eq!((io.input.len(), io.output.len(), io.fixed.len()), (9, 6, 4));
        io.output.fill(2.0);
        let capacity = ws.values.capacity();
        ws.prepare(2);
        assert_eq!(ws.values.capacity(), capacity);
        let mut pass = Pass::new(&mut ws, None);
        let io = pass.backward_io(0, 2, Some(1));
        assert_eq!((io.input.len(), io.output.len(), io.aux.len()), (4, 4, 6));
        // The same table over borrowed buffers, the input outside.
        let (mut values, mut grads, mut fixed) = (vec![0.0f32; 14], vec![0.0; 14], vec![0.0; 4]);
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut pass = Pass::over(SPEC.nodes, 2, &mut values, &mut grads, &mut fixed, Some(&x));
        let io = pass.forward_io(0, 1, None);
        assert_eq!(io.input, &x);
        io.output.fill(5.0);
        let io = pass.backward_io(0, 1, None);
        assert_eq!((io.input, io.output), (&x[..], &[5.0; 6][..]));
    }
}
