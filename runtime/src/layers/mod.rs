//! Layer kernels: one family per module, forward and backward side by side.
//!
//! Every kernel works on a batch laid out as `rows` rows of a fixed width (a sample of
//! `[steps, features]` is `steps` rows of `features`), takes its destination first and
//! says whether it replaces or accumulates into it with [`Accum`]. The `# Panics`
//! section of each kernel lists the length rules; generated models always satisfy them.
//!
//! Backward arguments are named the same way everywhere: `input` and `output` are the
//! values of the forward pass, `grad_output` is dL/d`output` and `grad_input` is what the
//! kernel writes, dL/d`input`.

pub mod activation;
pub mod attention;
pub mod batchnorm;
pub mod conv;
pub mod conv_transpose;
pub mod dense;
mod direct;
pub mod dropout;
mod matvec;
pub mod merge;
mod pair;
mod panels;
pub mod pool;
pub mod recurrent;
pub mod residual;
pub mod softmax;
mod sparse;
mod thin;
pub mod upsample;

pub use activation::{activation_backward, activation_forward, Activation, Maxima};
pub use attention::{
    attention_backward, attention_forward, embedding_backward, embedding_forward,
    layer_norm_backward, layer_norm_forward, positional_backward, positional_forward, token_index,
    AttentionGrads, AttentionInputs, AttentionShape,
};
pub use batchnorm::{batch_norm_backward, batch_norm_forward, BatchNormShape};
pub use conv::{conv2d_backward, conv2d_forward};
pub use conv_transpose::{conv_transpose2d_backward, conv_transpose2d_forward};
pub use dense::{
    dense_backward, dense_backward_deferred, dense_backward_noting, dense_backward_update,
    dense_forward, dense_weight_update,
};
pub use dropout::{dropout_backward, dropout_forward, dropout_forward_shard};
pub use kiln_shapes::Conv2dShape;
pub use merge::{
    concat_backward, concat_forward, product_backward, product_forward, slice_backward,
    sum_activation_backward, sum_backward, sum_forward,
};
pub use pool::{
    avg_pool2d_backward, avg_pool2d_forward, global_avg_pool_backward, global_avg_pool_forward,
    max_pool2d_backward, max_pool2d_forward,
};
pub use recurrent::{
    bidirectional_backward, bidirectional_forward, last_step_backward, last_step_forward,
    recurrent_backward, recurrent_forward, transpose_backward, transpose_forward, Cell,
    RecurrentShape,
};
pub use residual::residual_backward;
pub use softmax::{log_softmax_backward, log_softmax_forward, softmax_backward, softmax_forward};
pub use upsample::{upsample_backward, upsample_forward, Interpolation, UpsampleShape};

pub use faer::Accum;
pub(crate) use pair::join;

use faer::{MatMut, MatRef, Par};

use crate::simd::vectorized;
use crate::Float;

/// faer's `matmul`, then [`clear_upper_vector_state`](crate::simd::clear_upper_vector_state):
/// the GEMM crate's AVX micro-kernels return with the upper halves of the vector
/// registers in use, and the SSE code of a crate built for the x86-64 baseline that
/// runs next on the thread (a loss, the libm calls it makes) then stalls on every
/// instruction. In the 784-128-10 MLP's step built without `-C target-cpu` this was a
/// quarter of the time: the cross-entropy's 1,280 `exp` calls ran eight times slower.
pub(crate) fn matmul<T: Float>(
    dst: MatMut<'_, T>,
    accum: Accum,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    alpha: T,
    par: Par,
) {
    faer::linalg::matmul::matmul(dst, accum, lhs, rhs, alpha, par);
    crate::simd::clear_upper_vector_state();
}

/// Below this many floating-point operations a kernel runs on the calling thread: on
/// two cores, handing work to rayon costs more than it saves for smaller products.
/// Narrow products run far below the GEMM's peak, so the line is in time more than in
/// FLOPs: the T4 model's 128 → 10 layer at batch 1024 (2.6 MFLOP) took 46–59 µs on one
/// thread and 30–34 µs split in two (a scratch timing of `dense_forward`, not in the
/// repo), which moved this from 4 to 2 MFLOP.
pub(crate) const PARALLEL_MIN_FLOPS: f64 = 2.0e6;

/// What a value that an element-wise pass reads or writes counts for against
/// [`PARALLEL_MIN_FLOPS`]: such a pass is bound by memory, not arithmetic, so its one or
/// two FLOPs a value say nothing of its time. A residual block's sum over 65,536
/// values (three values moved each) took 3.4–4.5 µs on one thread and 2.5 µs in two
/// halves on two, its backward pass (five moved) 6.9–8.5 and 3.4 µs; over 16,384 values
/// the halves gained nothing (1.1 against 1.2 µs and 1.5–1.6 against 1.4–1.5; a scratch
/// timing on Zen 5 of `sum_forward` and `residual_backward` in a loop, the halves on
/// rayon's two threads, not in the repo). At 8 a value moved ([`pass_cost`]), a sum of
/// two terms splits from 77,000 values, a ReLU from 118,000, its backward from 61,000.
pub(crate) const PASS_FLOPS_PER_VALUE: f64 = 8.0;

/// What one value of an element-wise pass that computes `flops` and reads or writes
/// `moved` values counts for against [`PARALLEL_MIN_FLOPS`].
pub(crate) fn pass_cost(flops: f64, moved: usize) -> f64 {
    flops + moved as f64 * PASS_FLOPS_PER_VALUE
}

/// The values a [`store`] into a destination moves: it writes one, and adding reads it
/// first.
pub(crate) fn stored(accum: Accum) -> usize {
    match accum {
        Accum::Replace => 1,
        Accum::Add => 2,
    }
}

/// Runs `body(first, block)` over `out` in blocks of whole vectors of 16 values,
/// splitting across the threads ([`join`]) when an element-wise pass that computes
/// `flops` and moves `moved` values for each value of `out` (read or written, `out`'s
/// own included) reaches [`PARALLEL_MIN_FLOPS`] ([`pass_cost`]). `first` is the index of the block's first value. The
/// values do not depend on the split.
pub(crate) fn for_value_blocks<T: Send>(
    out: &mut [T],
    flops: f64,
    moved: usize,
    body: &(impl Fn(usize, &mut [T]) + Sync),
) {
    const LANES: usize = 16;
    let flops_per_row = LANES as f64 * pass_cost(flops, moved);
    for_row_blocks(out, LANES, flops_per_row, &|first_row, block| {
        body(first_row * LANES, block);
    });
}

/// Where [`split_batch`] splits a batch: after `batch / 2` samples when the work is
/// large enough, else `batch` (not split).
pub(crate) fn batch_half(batch: usize, flops_per_sample: f64) -> usize {
    if batch >= 2 && flops_per_sample * batch as f64 >= PARALLEL_MIN_FLOPS {
        batch / 2
    } else {
        batch
    }
}

/// The most samples one call of [`split_batch`]'s body gets for this batch.
pub(crate) fn largest_part(batch: usize, flops_per_sample: f64) -> usize {
    let half = batch_half(batch, flops_per_sample);
    if half == batch {
        batch
    } else {
        batch - half
    }
}

/// Per-sample buffers that [`split_batch`] cuts at the same sample: a slice with the
/// number of its values a sample, `(values, per_sample)`, or [`Both`] of two such.
pub(crate) trait Samples: Send + Sized {
    /// What the body of [`split_batch`] receives.
    type Part;
    /// The samples before `sample`, and the rest.
    fn split_at_sample(self, sample: usize) -> (Self, Self);
    /// The buffer as the body receives it.
    fn into_part(self) -> Self::Part;
}

/// A slice with the number of its values a sample: the plain [`Samples`].
pub(crate) type PerSample<'a, A> = (&'a mut [A], usize);

impl<'a, A: Send> Samples for PerSample<'a, A> {
    type Part = &'a mut [A];
    fn split_at_sample(self, sample: usize) -> (Self, Self) {
        let (before, after) = self.0.split_at_mut(sample * self.1);
        ((before, self.1), (after, self.1))
    }
    fn into_part(self) -> Self::Part {
        self.0
    }
}

/// Two per-sample buffers passed to [`split_batch`] as one; the body receives the pair.
pub(crate) struct Both<X, Y>(pub X, pub Y);

impl<X: Samples, Y: Samples> Samples for Both<X, Y> {
    type Part = (X::Part, Y::Part);
    fn split_at_sample(self, sample: usize) -> (Self, Self) {
        let (x0, x1) = self.0.split_at_sample(sample);
        let (y0, y1) = self.1.split_at_sample(sample);
        (Both(x0, y0), Both(x1, y1))
    }
    fn into_part(self) -> Self::Part {
        (self.0.into_part(), self.1.into_part())
    }
}

/// Runs `body(first_sample, a, b)` over the batch, in two halves on two threads
/// ([`join`]) when the work is large enough, `a` and `b` cut at the same sample. The
/// split does not depend on the number of threads, so results are the same with any
/// number of threads (across processors they can differ in the last bits: the kernels
/// choose their instructions at run time).
pub(crate) fn split_batch<P: Samples, Q: Samples>(
    batch: usize,
    flops_per_sample: f64,
    a: P,
    b: Q,
    body: &(impl Fn(usize, P::Part, Q::Part) + Sync),
) -> bool {
    let half = batch_half(batch, flops_per_sample);
    if half == batch {
        body(0, a.into_part(), b.into_part());
        return false;
    }
    let (a0, a1) = a.split_at_sample(half);
    let (b0, b1) = b.split_at_sample(half);
    join(
        || body(0, a0.into_part(), b0.into_part()),
        || body(half, a1.into_part(), b1.into_part()),
    );
    true
}

/// Runs `body(first_row, block)` over blocks of whole rows of `out` (rows of `width`
/// values), splitting across the threads ([`join`]) when the work is large enough.
/// Each row is computed exactly as it would be serially, so results do not depend on
/// the split.
pub(crate) fn for_row_blocks<T: Send>(
    out: &mut [T],
    width: usize,
    flops_per_row: f64,
    body: &(impl Fn(usize, &mut [T]) + Sync),
) {
    fn split<T: Send>(
        first_row: usize,
        out: &mut [T],
        width: usize,
        pieces: usize,
        body: &(impl Fn(usize, &mut [T]) + Sync),
    ) {
        let rows = out.len() / width;
        if pieces <= 1 || rows < 2 {
            body(first_row, out);
            return;
        }
        let left_rows = rows / 2;
        let (left, right) = out.split_at_mut(left_rows * width);
        join(
            || split(first_row, left, width, pieces / 2, body),
            || {
                split(
                    first_row + left_rows,
                    right,
                    width,
                    pieces - pieces / 2,
                    body,
                )
            },
        );
    }
    if width == 0 || out.is_empty() {
        return;
    }
    let rows = out.len() / width;
    let pieces = if flops_per_row * rows as f64 >= PARALLEL_MIN_FLOPS {
        rayon::current_num_threads().min(rows)
    } else {
        1
    };
    split(0, out, width, pieces, body);
}

/// Runs `body(first_col, block)` over blocks of whole columns of `out`, splitting
/// across the threads ([`join`]) when the work is large enough; block edges fall on
/// multiples of 16 columns (an AVX-512 register of f32). Each column is computed
/// exactly as it would be serially, so results do not depend on the split.
///
/// For a product whose right-hand side is a large weight, splitting the columns gives
/// each thread half the weight to pack and stream, where splitting the rows would have
/// both threads pack all of it.
pub(crate) fn for_col_blocks<T: Send>(
    out: faer::MatMut<'_, T>,
    flops_per_col: f64,
    body: &(impl Fn(usize, faer::MatMut<'_, T>) + Sync),
) {
    fn split<T: Send>(
        first_col: usize,
        out: faer::MatMut<'_, T>,
        pieces: usize,
        body: &(impl Fn(usize, faer::MatMut<'_, T>) + Sync),
    ) {
        let cols = out.ncols();
        let left_cols = (cols / 2).next_multiple_of(16).min(cols);
        if pieces <= 1 || left_cols == cols {
            body(first_col, out);
            return;
        }
        let (left, right) = out.split_at_col_mut(left_cols);
        join(
            || split(first_col, left, pieces / 2, body),
            || split(first_col + left_cols, right, pieces - pieces / 2, body),
        );
    }
    let cols = out.ncols();
    if cols == 0 || out.nrows() == 0 {
        return;
    }
    let pieces = if flops_per_col * cols as f64 >= PARALLEL_MIN_FLOPS {
        rayon::current_num_threads().min(cols.div_ceil(16))
    } else {
        1
    };
    split(0, out, pieces, body);
}

/// `Σ f(a[i], b[i], …)` over slices of one length, in 16 interleaved partial sums (an
/// AVX-512 register of f32), so the adds vectorise; the order is fixed by the length
/// alone. Layer norm sums squared deviations and products through it without writing
/// them out; [`Lanes`] sums over several slices.
///
/// # Panics
/// If the slices differ in length.
#[inline(always)]
pub(crate) fn lane_sum<T: Float, const N: usize>(inputs: [&[T]; N], f: impl Fn([T; N]) -> T) -> T {
    lane_fold(inputs, T::ZERO, f, |a, b| a + b)
}

/// The largest of `values` (not empty; NaN-ignoring, like [`Float::max`]), in 16
/// interleaved lanes so that it vectorises. The maximum does not depend on the order.
#[inline(always)]
pub(crate) fn lane_max<T: Float>(values: &[T]) -> T {
    lane_fold([values], values[0], |[v]| v, T::max)
}

/// `f(x₀) ∘ f(x₁) ∘ … ∘ f(x_{n−1})`, `xᵢ` the `i`-th values of the `inputs` (all of
/// length `n`), for an associative `op` with identity `init`, in 16 interleaved lanes:
/// lane `l` folds `f(x_l), f(x_{l+16}), …`, then the tail is folded from `init` and the
/// lanes are folded onto it in order ([`Lanes`] over one input).
///
/// # Panics
/// If the inputs differ in length.
#[inline(always)]
fn lane_fold<T: Float, const N: usize>(
    inputs: [&[T]; N],
    init: T,
    f: impl Fn([T; N]) -> T,
    op: impl Fn(T, T) -> T,
) -> T {
    let mut lanes = Lanes::new(init);
    lanes.fold(inputs, f, &op);
    lanes.finish(op)
}

/// A fold in 16 interleaved lanes (an AVX-512 register of f32) over one slice or
/// several in turn, folded onto one value once at the end: lane `l` folds the values at
/// `l, l + 16, …` of each slice's whole blocks of 16, slice after slice; the values
/// past a slice's last whole block (its tail) are folded in turn into one more value,
/// and [`Lanes::finish`] folds the lanes onto that in order. The order is fixed by the
/// slices' lengths alone.
///
/// The lanes are taken from arrays of 16 values, one bounds check a block: with an
/// index per value (`f(i)` reading `x[i]`), the compiler kept a bounds check on each
/// and the lanes stayed scalar, sixteen `vaddss` where one `vaddps` does (batch norm's
/// channel sums were 9 % of a ResNet-20 step on an AVX-512 processor, five times its
/// input-gradient pass over the same tensors). Batch norm sums a channel over its
/// planes, one a sample, into one `Lanes`: folding the lanes once a plane cost more
/// than the adds on ResNet-20's planes of 64 values.
pub(crate) struct Lanes<T> {
    partial: [T; 16],
    tail: T,
}

impl<T: Float> Lanes<T> {
    /// Every lane and the tail at `init`, the identity of the fold.
    #[inline(always)]
    pub(crate) fn new(init: T) -> Self {
        Lanes {
            partial: [init; 16],
            tail: init,
        }
    }

    /// Lanes for a sum, at zero.
    #[inline(always)]
    pub(crate) fn zero() -> Self {
        Self::new(T::ZERO)
    }

    /// Folds `f(x₀), …, f(x_{n−1})` of the next slices (`inputs`, all of length `n`) in.
    ///
    /// # Panics
    /// If the inputs differ in length.
    #[inline(always)]
    pub(crate) fn fold<const N: usize>(
        &mut self,
        inputs: [&[T]; N],
        f: impl Fn([T; N]) -> T,
        op: impl Fn(T, T) -> T,
    ) {
        const LANES: usize = 16;
        let n = inputs.first().map_or(0, |x| x.len());
        assert!(
            inputs.iter().all(|x| x.len() == n),
            "Lanes::fold: inputs of different lengths"
        );
        let whole = n / LANES * LANES;
        for base in (0..whole).step_by(LANES) {
            let block: [&[T; LANES]; N] = std::array::from_fn(|k| {
                inputs[k][base..base + LANES]
                    .try_into()
                    .expect("a block is LANES values")
            });
            for (l, p) in self.partial.iter_mut().enumerate() {
                *p = op(*p, f(std::array::from_fn(|k| block[k][l])));
            }
        }
        // `i` indexes every input, not `inputs` itself.
        #[allow(clippy::needless_range_loop)]
        for i in whole..n {
            self.tail = op(self.tail, f(std::array::from_fn(|k| inputs[k][i])));
        }
    }

    /// [`Lanes::fold`] for a sum.
    #[inline(always)]
    pub(crate) fn add<const N: usize>(&mut self, inputs: [&[T]; N], f: impl Fn([T; N]) -> T) {
        self.fold(inputs, f, |a, b| a + b);
    }

    /// The tail's value with the lanes folded onto it in order.
    #[inline(always)]
    pub(crate) fn finish(self, op: impl Fn(T, T) -> T) -> T {
        self.partial.into_iter().fold(self.tail, op)
    }

    /// [`Lanes::finish`] for a sum.
    #[inline(always)]
    pub(crate) fn sum(self) -> T {
        self.finish(|a, b| a + b)
    }
}

/// A convolution's bias gradient: `grad_bias[c] = Σ` over every sample of output
/// channel `c`'s plane of `grad_output` (`plane` values a channel, `sample_len` a
/// sample). Split by channel ([`for_row_blocks`]; a sum reads each value once, counted
/// as 8 FLOPs), each channel's planes summed in turn into one set of [`Lanes`] folded
/// once, inside [`vectorized`]. This function is generic, so it is compiled in the
/// crate that uses the model; outside the wrapper that is SSE2 under cargo's
/// defaults, and with the lanes folded once a plane the benchmark CNN's bias sums
/// (planes of 121 and 676 values) were 6.8 % of its step's samples.
pub(crate) fn bias_grad<T: Float>(
    grad_bias: &mut [T],
    grad_output: &[T],
    sample_len: usize,
    plane: usize,
) {
    let batch = grad_output.len() / sample_len.max(1);
    for_row_blocks(
        grad_bias,
        1,
        (8 * batch * plane) as f64,
        &|first, block: &mut [T]| {
            vectorized(
                #[inline(always)]
                || {
                    for (c, gb) in (first..).zip(block.iter_mut()) {
                        let mut total = Lanes::zero();
                        for sample in grad_output.chunks_exact(sample_len) {
                            total.add([&sample[c * plane..][..plane]], |[g]| g);
                        }
                        *gb = total.sum();
                    }
                },
            );
        },
    );
}

/// `values` as `f32`, for the hand-written kernels chosen when `T` is `f32`.
///
/// # Safety
/// `T` must be `f32`.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn as_f32<T>(values: &[T]) -> &[f32] {
    // SAFETY: the caller guarantees `T` is `f32`.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), values.len()) }
}

/// The mutable twin of [`as_f32`].
///
/// # Safety
/// `T` must be `f32`.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn as_f32_mut<T>(values: &mut [T]) -> &mut [f32] {
    // SAFETY: the caller guarantees `T` is `f32`.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), values.len()) }
}

/// `dst = value` or `dst += value`.
#[inline(always)]
pub(crate) fn store<T: Float>(dst: &mut T, value: T, accum: Accum) {
    match accum {
        Accum::Replace => *dst = value,
        Accum::Add => *dst += value,
    }
}

/// Asserts a buffer length with a message naming the buffer.
#[inline(always)]
#[track_caller]
pub(crate) fn check_len(name: &str, len: usize, expected: usize) {
    assert_eq!(
        len, expected,
        "{name}: expected {expected} values, got {len}"
    );
}

/// Test helpers: central finite differences in f64 and a tiny deterministic generator.
#[cfg(test)]
pub(crate) mod testing {
    use super::Activation;

    /// The activations a layer can fuse after itself besides the identity: each fused
    /// kernel is checked over these against the two layers in turn.
    pub const FUSABLE: [Activation; 4] = [
        Activation::Relu,
        Activation::LeakyRelu(0.2),
        Activation::Sigmoid,
        Activation::Tanh,
    ];

    /// Deterministic values in [-1, 1).
    pub fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    /// `v` rounded to f32, for the f32 twin of an f64 test.
    pub fn narrow(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&a| a as f32).collect()
    }

    /// `v` widened to f64, to compare an f32 result with the f64 one.
    pub fn widen(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&a| f64::from(a)).collect()
    }

    /// Central-difference gradient of `f` at `x`, step `h`.
    pub fn numeric_grad(x: &[f64], h: f64, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
        let mut probe = x.to_vec();
        (0..x.len())
            .map(|i| {
                probe[i] = x[i] + h;
                let up = f(&probe);
                probe[i] = x[i] - h;
                let down = f(&probe);
                probe[i] = x[i];
                (up - down) / (2.0 * h)
            })
            .collect()
    }

    /// Largest relative error `|a - b| / max(1, |a|, |b|)`.
    #[track_caller]
    pub fn assert_close(actual: &[f64], expected: &[f64], tol: f64) {
        assert_eq!(actual.len(), expected.len());
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            let err = (a - e).abs() / 1f64.max(a.abs()).max(e.abs());
            assert!(
                err <= tol,
                "element {i}: {a} vs {e} (error {err:e} > {tol:e})"
            );
        }
    }

    /// Sizes for the tests of fast paths: every size in `edges` (a block boundary, one
    /// below and one above each) and `extra` drawn from `1..=max`, deterministically.
    pub fn sizes(edges: &[usize], extra: usize, max: usize, seed: u64) -> Vec<usize> {
        let mut out: Vec<usize> = edges
            .iter()
            .flat_map(|&e| [e.saturating_sub(1), e, e + 1])
            .filter(|&n| n > 0)
            .collect();
        out.extend(
            values(extra, seed)
                .iter()
                .map(|v| 1 + ((v + 1.0) / 2.0 * max as f64) as usize % max),
        );
        out
    }

    /// Dot product, the scalar a backward pass is checked through: L = sum(w * y).
    pub fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented order, written out: lane `l` folds values `l, l + 16, …`, the tail
    /// is folded from the identity, then the lanes onto it in turn.
    fn in_lanes(values: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
        let whole = values.len() / 16 * 16;
        let lanes: Vec<f32> = (0..16)
            .map(|l| (l..whole).step_by(16).fold(init, |a, i| op(a, values[i])))
            .collect();
        let tail = values[whole..].iter().fold(init, |a, &v| op(a, v));
        lanes.into_iter().fold(tail, op)
    }

    /// `Σ a[i] b[i]` over the ranges in turn, in one [`Lanes`].
    #[inline(always)]
    fn folded(a: &[f32], b: &[f32], cuts: &[std::ops::Range<usize>]) -> f32 {
        let mut sum = Lanes::zero();
        for r in cuts {
            sum.add([&a[r.clone()], &b[r.clone()]], |[x, y]| x * y);
        }
        sum.sum()
    }

    /// A sum over several slices in one [`Lanes`] is its documented order bit for bit:
    /// each lane over the slices' whole blocks in turn, the tails in turn, the lanes
    /// folded onto the tails once; inside and outside the vectorised wrapper.
    #[test]
    fn lanes_over_several_slices_fold_once() {
        let a = testing::narrow(&testing::values(300, 4));
        let b = testing::narrow(&testing::values(300, 5));
        for lengths in [&[64, 64, 64][..], &[5, 17, 0, 40], &[16, 33, 15, 64], &[3]] {
            let mut cuts = vec![];
            let mut at = 0;
            for &n in lengths {
                cuts.push(at..at + n);
                at += n;
            }
            let (mut lanes, mut tail) = ([0.0f32; 16], 0.0f32);
            for r in &cuts {
                let whole = r.len() / 16 * 16;
                for i in 0..whole {
                    lanes[i % 16] += a[r.start + i] * b[r.start + i];
                }
                for i in whole..r.len() {
                    tail += a[r.start + i] * b[r.start + i];
                }
            }
            let expected = lanes.iter().fold(tail, |t, &l| t + l);
            assert_eq!(
                folded(&a, &b, &cuts).to_bits(),
                expected.to_bits(),
                "{lengths:?}"
            );
            let wrapped = crate::simd::vectorized(
                #[inline(always)]
                || folded(&a, &b, &cuts),
            );
            assert_eq!(
                wrapped.to_bits(),
                expected.to_bits(),
                "{lengths:?}, wrapped"
            );
        }
    }

    /// Sums and maxima over one to three inputs are the documented order bit for bit,
    /// at every length around the 16-value blocks, inside and outside the vectorised
    /// wrapper; different lengths are refused.
    #[test]
    fn lane_folds_keep_their_order_for_every_length_and_input_count() {
        let a = testing::narrow(&testing::values(100, 1));
        let b = testing::narrow(&testing::values(100, 2));
        let c = testing::narrow(&testing::values(100, 3));
        for n in (0..=50).chain([63, 64, 65, 100]) {
            let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
            let products: Vec<f32> = (0..n).map(|i| a[i] * (b[i] - 0.25) * c[i]).collect();
            let expected = in_lanes(&products, 0.0, |x, y| x + y);
            let three = |[a, b, c]: [f32; 3]| a * (b - 0.25) * c;
            assert_eq!(lane_sum([a, b, c], three).to_bits(), expected.to_bits());
            let wrapped = crate::simd::vectorized(
                #[inline(always)]
                || lane_sum([a, b, c], three),
            );
            assert_eq!(wrapped.to_bits(), expected.to_bits(), "{n} values");
            let pairs: Vec<f32> = (0..n).map(|i| a[i] * b[i]).collect();
            let two = lane_sum([a, b], |[a, b]| a * b);
            assert_eq!(two.to_bits(), in_lanes(&pairs, 0.0, |x, y| x + y).to_bits());
            assert_eq!(
                lane_sum([a], |[v]| v).to_bits(),
                in_lanes(a, 0.0, |x, y| x + y).to_bits()
            );
            if n > 0 {
                let max = in_lanes(a, a[0], f32::max);
                assert_eq!(lane_max(a), max);
                assert_eq!(max, a.iter().copied().fold(f32::MIN, f32::max));
            }
        }
        let with_nan = [1.0, f32::NAN, 3.0, -2.0];
        assert_eq!(lane_max(&with_nan), 3.0);
        let refused = std::panic::catch_unwind(|| lane_sum([&a[..3], &b[..4]], |[x, y]| x * y));
        assert!(refused.is_err());
    }
}
