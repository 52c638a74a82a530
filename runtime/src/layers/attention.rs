//! Layers for sequences of vectors: layer normalisation, learned positional
//! embeddings, token embeddings and multi-head self-attention (PyTorch's definitions
//! and parameter names).
//!
//! - LayerNorm over the last axis: `y = γ (x − μ) / √(σ² + ε) + β` per row, biased
//!   variance, `γ = 1`, `β = 0` initially.
//! - Positional embedding: `y_t = x_t + P_t` with a learned `P: [steps, dim]`.
//! - Embedding: token ids (stored as floats in the input) select rows of `W: [vocab,
//!   dim]`; an id that is not an integer in `0..vocab` gives a zero row here, and the
//!   model's input check reports it as an error before training or evaluation.
//! - Multi-head attention, as `nn.MultiheadAttention(dim, heads, batch_first=True)`:
//!   called with `(x, x, x)` (self-attention) or `(x, m, m)` (cross-attention from `x`
//!   to a memory `m`): `q = x W_qᵀ + b_q`, `[k v] = m W_kvᵀ + b_kv` (the rows of the
//!   packed `W_in`, `b_in`); per head `softmax(q kᵀ / √d_head + mask) v`; heads
//!   concatenated; `y = o W_outᵀ + b_out`. The causal mask hides later steps; the key
//!   padding (PyTorch's boolean `key_padding_mask`, 1 = padded) hides keys per sample. A
//!   query that sees no key at all gets zero weights (PyTorch gives NaN), so its output
//!   is `b_out`.
//!
//! # Shapes
//! Samples are `[steps, dim]` (the memory `[keys, dim]`, its padding `[keys]`); the
//! embedding's input is `[steps]` of ids.

use faer::{Accum, MatMut, MatRef, Par};

use super::softmax::softmax_in_place;
use super::{check_len, lane_sum, matmul, split_batch, store, PARALLEL_MIN_FLOPS};
use crate::simd::vectorized;
use crate::Float;

/// Layer normalisation forward over rows of `width`; `saved` (2 values per row) keeps
/// the mean and `1/σ` for backward. Rows are independent: above the threads' line
/// ([`split_batch`]) the two halves run on two threads, and each row's sums run in 16
/// lanes ([`lane_sum`]) inside [`vectorized`], so the result does not depend on the split.
///
/// # Panics
/// If a length does not match.
pub fn layer_norm_forward<T: Float>(
    output: &mut [T],
    saved: &mut [T],
    input: &[T],
    gamma: &[T],
    beta: &[T],
    width: usize,
    eps: f64,
) {
    let rows = input.len() / width;
    check_len("layer_norm output", output.len(), input.len());
    check_len("layer_norm saved", saved.len(), 2 * rows);
    check_len("layer_norm gamma", gamma.len(), width);
    check_len("layer_norm beta", beta.len(), width);
    let eps = T::from_f64(eps);
    let inv_n = T::from_f64(1.0 / width as f64);
    // Two passes to read the row and one to write it: counted as 8 FLOPs a value.
    let flops_per_row = 8.0 * width as f64;
    let body = |first: usize, output: &mut [T], saved: &mut [T]| {
        let input = &input[first * width..][..output.len()];
        vectorized(
            #[inline(always)]
            || {
                for ((y, x), st) in output
                    .chunks_exact_mut(width)
                    .zip(input.chunks_exact(width))
                    .zip(saved.chunks_exact_mut(2))
                {
                    let mean = lane_sum([x], |[x]| x) * inv_n;
                    let var = lane_sum([x], |[x]| (x - mean) * (x - mean)) * inv_n;
                    let inv_std = T::ONE / (var + eps).sqrt();
                    st[0] = mean;
                    st[1] = inv_std;
                    let (gamma, beta) = (&gamma[..width], &beta[..width]);
                    for i in 0..width {
                        y[i] = gamma[i] * (x[i] - mean) * inv_std + beta[i];
                    }
                }
            },
        )
    };
    split_batch(rows, flops_per_row, (output, width), (saved, 2), &body);
}

/// Gradient of [`layer_norm_forward`]; `grad_gamma` and `grad_beta` are replaced.
///
/// The parameter gradients are sums over every row, taken on the calling thread in one
/// fixed order; the input gradient, row by row, runs alongside them on the other thread
/// (in two halves of its own above the threads' line), so results do not depend on the
/// number of threads.
///
/// # Panics
/// If a length does not match.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward<T: Float>(
    grad_input: Option<(&mut [T], Accum)>,
    grad_gamma: &mut [T],
    grad_beta: &mut [T],
    saved: &[T],
    input: &[T],
    gamma: &[T],
    grad_output: &[T],
    width: usize,
) {
    let rows = input.len() / width;
    check_len("layer_norm grad_output", grad_output.len(), input.len());
    check_len("layer_norm saved", saved.len(), 2 * rows);
    check_len("layer_norm grad_gamma", grad_gamma.len(), width);
    check_len("layer_norm grad_beta", grad_beta.len(), width);
    let mut params = || {
        vectorized(
            #[inline(always)]
            || {
                grad_gamma.fill(T::ZERO);
                grad_beta.fill(T::ZERO);
                for ((g, x), st) in grad_output
                    .chunks_exact(width)
                    .zip(input.chunks_exact(width))
                    .zip(saved.chunks_exact(2))
                {
                    let (mean, inv_std) = (st[0], st[1]);
                    let (grad_gamma, grad_beta) =
                        (&mut grad_gamma[..width], &mut grad_beta[..width]);
                    for i in 0..width {
                        grad_gamma[i] += g[i] * (x[i] - mean) * inv_std;
                        grad_beta[i] += g[i];
                    }
                }
            },
        )
    };
    let Some((grad_input, accum)) = grad_input else {
        params();
        return;
    };
    check_len("layer_norm grad_input", grad_input.len(), input.len());
    let inv_n = T::from_f64(1.0 / width as f64);
    let inputs = |first: usize, grad_input: &mut [T], _: &mut [T]| {
        let rows = grad_input.len() / width;
        let grad_output = &grad_output[first * width..][..rows * width];
        let input = &input[first * width..][..rows * width];
        let saved = &saved[first * 2..][..rows * 2];
        vectorized(
            #[inline(always)]
            || {
                for (((gi, g), x), st) in grad_input
                    .chunks_exact_mut(width)
                    .zip(grad_output.chunks_exact(width))
                    .zip(input.chunks_exact(width))
                    .zip(saved.chunks_exact(2))
                {
                    let (mean, inv_std) = (st[0], st[1]);
                    let sum_d = lane_sum([g, gamma], |[g, gamma]| g * gamma);
                    let sum_dx =
                        lane_sum([g, gamma, x], |[g, gamma, x]| g * gamma * (x - mean)) * inv_std;
                    let (mean_d, mean_dx) = (sum_d * inv_n, sum_dx * inv_n);
                    let gamma = &gamma[..width];
                    for i in 0..width {
                        let x_hat = (x[i] - mean) * inv_std;
                        store(
                            &mut gi[i],
                            inv_std * (g[i] * gamma[i] - mean_d - x_hat * mean_dx),
                            accum,
                        );
                    }
                }
            },
        )
    };
    // The input gradient reads every value four times and writes it once, the
    // parameters' sums read it three times: counted as 12 FLOPs a value in all.
    if 12.0 * input.len() as f64 >= PARALLEL_MIN_FLOPS {
        super::join(params, || {
            split_batch(
                rows,
                8.0 * width as f64,
                (grad_input, width),
                (&mut [][..], 0),
                &inputs,
            )
        });
    } else {
        params();
        inputs(0, grad_input, &mut []);
    }
}

/// `output = input + table` for every sample (`table` is one sample long).
///
/// # Panics
/// If a length does not match.
pub fn positional_forward<T: Float>(output: &mut [T], input: &[T], table: &[T]) {
    check_len("positional output", output.len(), input.len());
    for (y, x) in output
        .chunks_exact_mut(table.len())
        .zip(input.chunks_exact(table.len()))
    {
        for ((yv, &xv), &p) in y.iter_mut().zip(x).zip(table) {
            *yv = xv + p;
        }
    }
}

/// Gradient of [`positional_forward`]: the table's gradient (replaced) sums the batch.
///
/// # Panics
/// If a length does not match.
pub fn positional_backward<T: Float>(
    grad_input: Option<(&mut [T], Accum)>,
    grad_table: &mut [T],
    grad_output: &[T],
) {
    grad_table.fill(T::ZERO);
    for g in grad_output.chunks_exact(grad_table.len()) {
        for (gt, &v) in grad_table.iter_mut().zip(g) {
            *gt += v;
        }
    }
    if let Some((grad_input, accum)) = grad_input {
        check_len("positional grad_input", grad_input.len(), grad_output.len());
        for (gi, &v) in grad_input.iter_mut().zip(grad_output) {
            store(gi, v, accum);
        }
    }
}

/// The row index of token `id`, if it is an integer in `0..vocab`.
pub fn token_index<T: Float>(id: T, vocab: usize) -> Option<usize> {
    let v = id.to_f64();
    (v >= 0.0 && v < vocab as f64 && v.fract() == 0.0).then_some(v as usize)
}

/// Looks up each id's row of `table` (`vocab x dim`); an invalid id gives zeros.
///
/// # Panics
/// If a length does not match.
pub fn embedding_forward<T: Float>(output: &mut [T], ids: &[T], table: &[T], dim: usize) {
    check_len("embedding output", output.len(), ids.len() * dim);
    let vocab = table.len() / dim;
    for (y, &id) in output.chunks_exact_mut(dim).zip(ids) {
        match token_index(id, vocab) {
            Some(row) => y.copy_from_slice(&table[row * dim..(row + 1) * dim]),
            None => y.fill(T::ZERO),
        }
    }
}

/// Gradient of [`embedding_forward`] with respect to the table (replaced).
///
/// # Panics
/// If a length does not match.
pub fn embedding_backward<T: Float>(
    grad_table: &mut [T],
    ids: &[T],
    grad_output: &[T],
    dim: usize,
) {
    check_len("embedding grad_output", grad_output.len(), ids.len() * dim);
    grad_table.fill(T::ZERO);
    let vocab = grad_table.len() / dim;
    for (g, &id) in grad_output.chunks_exact(dim).zip(ids) {
        if let Some(row) = token_index(id, vocab) {
            for (gt, &v) in grad_table[row * dim..(row + 1) * dim].iter_mut().zip(g) {
                *gt += v;
            }
        }
    }
}

pub use kiln_shapes::AttentionShape;

/// What an attention layer reads, for the whole batch: the sequence its queries come
/// from and, for cross-attention, the memory its keys and values come from (`None`:
/// the queries' own sequence) and the key padding (`[keys]` per sample, PyTorch's
/// boolean `key_padding_mask` as numbers: a key marked 1 is hidden from every query, a
/// key marked 0 is seen; values above ½ count as 1).
#[derive(Debug, Clone, Copy)]
pub struct AttentionInputs<'a, T> {
    /// `[steps, dim]` per sample.
    pub query: &'a [T],
    /// `[keys, dim]` per sample, or `None` for self-attention.
    pub memory: Option<&'a [T]>,
    /// `[keys]` per sample, or `None`.
    pub key_padding: Option<&'a [T]>,
}

struct AuxParts<'a, T> {
    q: &'a mut [T],
    kv: &'a mut [T],
    probs: &'a mut [T],
    heads_out: &'a mut [T],
    grad_q: &'a mut [T],
    grad_kv: &'a mut [T],
    scratch: &'a mut [T],
}

fn aux_parts<'a, T>(s: &AttentionShape, aux: &'a mut [T]) -> AuxParts<'a, T> {
    let (st, k, d) = (s.steps, s.keys, s.dim);
    let (q, rest) = aux.split_at_mut(st * d);
    let (kv, rest) = rest.split_at_mut(2 * k * d);
    let (probs, rest) = rest.split_at_mut(s.heads * st * k);
    let (heads_out, rest) = rest.split_at_mut(st * d);
    let (grad_q, rest) = rest.split_at_mut(st * d);
    let (grad_kv, scratch) = rest.split_at_mut(2 * k * d);
    AuxParts {
        q,
        kv,
        probs,
        heads_out,
        grad_q,
        grad_kv,
        scratch,
    }
}

/// Adds `bias` to every row of `rows` (dense layers' epilogue).
fn add_bias<T: Float>(rows: &mut [T], bias: &[T]) {
    super::dense::epilogue(rows, Some(bias), super::Activation::Identity);
}

/// Adds every row of `rows` to `sum` (dense layers' column sums).
fn sum_rows<T: Float>(sum: &mut [T], rows: &[T]) {
    super::dense::column_sums(sum, rows, |d, total| *d += total);
}

/// Softmax of one row of scores over the keys it may see (`j < visible` and not
/// padded); hidden keys get weight 0, and a row that sees no key is all zeros. Without
/// padding the keys it sees are a prefix, and the softmax layer's row kernel
/// ([`softmax_in_place`]: vector lanes and `fast_exp`) runs over it (call it inside
/// [`vectorized`]).
#[inline(always)]
fn masked_softmax<T: Float>(row: &mut [T], visible: usize, padding: Option<&[T]>) {
    let Some(padding) = padding else {
        let (seen, hidden) = row.split_at_mut(visible.min(row.len()));
        hidden.fill(T::ZERO);
        if !seen.is_empty() {
            softmax_in_place(seen);
        }
        return;
    };
    let half = T::from_f64(0.5);
    let seen = |j: usize| j < visible && padding[j] <= half;
    let mut max: Option<T> = None;
    for (j, &p) in row.iter().enumerate() {
        if seen(j) {
            max = Some(max.map_or(p, |m: T| m.max(p)));
        }
    }
    let Some(max) = max else {
        row.fill(T::ZERO);
        return;
    };
    let mut sum = T::ZERO;
    for (j, p) in row.iter_mut().enumerate() {
        *p = if seen(j) { (*p - max).exp() } else { T::ZERO };
        sum += *p;
    }
    let inv = T::ONE / sum;
    row.iter_mut().for_each(|p| *p *= inv);
}

/// Rows of a causal self-attention's scores taken together: queries `first..` see
/// the keys before the block's end only, so the products skip the scores above the
/// diagonal that the mask hides. A block has at least 16 rows and a sequence at most 16
/// blocks ([`causal_block`]). Timed with faer on one head of the transformer benchmark
/// (64 steps, 32 values a head; a scratch program, not in the repo): `q kᵀ` and `p v`
/// took 7.5 µs unblocked, 6.3 in blocks of 32, 6.0 of 16 and 7.0 of 8, the backward
/// products alike. The whole layer (width 128, 4 heads, `attention_forward` and
/// `attention_backward` on two threads from a crate outside the repository, the least
/// of 100 calls, median of three alternating runs), forward and backward in ms, before
/// and after: 64 steps, batch 32: 2.89 and 5.24 → 2.78 and 4.80; 256 steps, batch 8:
/// 5.29 and 8.76 → 4.79 and 6.88; 1,024 steps, batch 2 (20 calls): 15.7 and 27.1 →
/// 12.3 and 17.3, where blocks of 16 rows instead of 64 gave 13.1 and 20.9. (Summing
/// each row's `dP · P` in lanes took backward to 4.90, 6.52 and 16.2 after these.)
const CAUSAL_BLOCK: usize = 16;

/// Most blocks a causal sequence is cut into.
const MAX_CAUSAL_BLOCKS: usize = 16;

/// Rows in a block of causal queries over `steps` steps: a multiple of
/// [`CAUSAL_BLOCK`], at most [`MAX_CAUSAL_BLOCKS`] blocks.
fn causal_block(steps: usize) -> usize {
    steps
        .div_ceil(MAX_CAUSAL_BLOCKS)
        .next_multiple_of(CAUSAL_BLOCK)
        .max(CAUSAL_BLOCK)
}

/// A block of [`query_blocks`] or [`key_blocks`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct Block {
    /// The block's first row (query or key).
    first: usize,
    /// Its number of rows.
    rows: usize,
    /// Query blocks: the keys `0..seen` the block's queries may see. Key blocks: the
    /// first query `seen` that may see one of the block's keys (all later ones do).
    seen: usize,
}

/// Whether the scores are blocked: causal self-attention (every other case is one
/// block of every row over every key).
fn blocked(s: &AttentionShape) -> bool {
    s.causal && s.keys == s.steps
}

/// `0..len` in blocks: of [`causal_block`] rows if `causal`, else one block; `seen`
/// gives a block's [`Block::seen`] from its first row and its number of rows.
fn blocks(
    len: usize,
    causal: bool,
    seen: impl Fn(usize, usize) -> usize,
) -> impl Iterator<Item = Block> {
    let size = if causal {
        causal_block(len)
    } else {
        len.max(1)
    };
    (0..len).step_by(size).map(move |first| {
        let rows = size.min(len - first);
        Block {
            first,
            rows,
            seen: seen(first, rows),
        }
    })
}

/// Blocks of query rows with the keys they see.
fn query_blocks(s: &AttentionShape) -> impl Iterator<Item = Block> {
    let (keys, causal) = (s.keys, blocked(s));
    blocks(
        s.steps,
        causal,
        move |first, rows| {
            if causal {
                first + rows
            } else {
                keys
            }
        },
    )
}

/// Blocks of keys with the first query that sees them.
fn key_blocks(s: &AttentionShape) -> impl Iterator<Item = Block> {
    let causal = blocked(s);
    blocks(
        s.keys,
        causal,
        move |first, _| if causal { first } else { 0 },
    )
}

/// Multi-head attention forward: self-attention over `inputs.query`, or
/// cross-attention from it to `inputs.memory`.
///
/// # Panics
/// If a length does not match the geometry or `heads` does not divide `dim`.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward<T: Float>(
    s: &AttentionShape,
    output: &mut [T],
    aux: &mut [T],
    inputs: AttentionInputs<'_, T>,
    in_weight: &[T],
    in_bias: &[T],
    out_weight: &[T],
    out_bias: &[T],
    batch: usize,
) {
    let (st, keys, d, h) = (s.steps, s.keys, s.dim, s.heads);
    assert_eq!(d % h, 0, "heads must divide dim");
    assert!(
        inputs.memory.is_some() || keys == st,
        "self-attention has as many keys as steps"
    );
    let dh = d / h;
    check_len("attention input", inputs.query.len(), batch * st * d);
    if let Some(memory) = inputs.memory {
        check_len("attention memory", memory.len(), batch * keys * d);
    }
    if let Some(padding) = inputs.key_padding {
        check_len("attention key padding", padding.len(), batch * keys);
    }
    check_len("attention output", output.len(), batch * st * d);
    check_len("attention aux", aux.len(), batch * s.aux_len());
    let scale = T::from_f64(1.0 / (dh as f64).sqrt());
    let w_in = MatRef::from_row_major_slice(in_weight, 3 * d, d);
    let w_out = MatRef::from_row_major_slice(out_weight, d, d);
    // Samples `first..` of the batch, into their rows of `output` and `aux`.
    let samples = |first: usize, output: &mut [T], aux: &mut [T]| {
        for (n, (y, aux)) in output
            .chunks_exact_mut(st * d)
            .zip(aux.chunks_exact_mut(s.aux_len()))
            .enumerate()
        {
            let b = first + n;
            let parts = aux_parts(s, aux);
            let x = MatRef::from_row_major_slice(&inputs.query[b * st * d..][..st * d], st, d);
            let m = match inputs.memory {
                Some(memory) => {
                    MatRef::from_row_major_slice(&memory[b * keys * d..][..keys * d], keys, d)
                }
                None => x,
            };
            let padding = inputs.key_padding.map(|p| &p[b * keys..][..keys]);
            // PyTorch's packed projections: rows 0..d of `W_in` give the queries, the
            // rest the keys and values.
            matmul(
                MatMut::from_row_major_slice_mut(&mut *parts.q, st, d),
                Accum::Replace,
                x,
                w_in.subrows(0, d).transpose(),
                T::ONE,
                Par::Seq,
            );
            add_bias(parts.q, &in_bias[..d]);
            matmul(
                MatMut::from_row_major_slice_mut(&mut *parts.kv, keys, 2 * d),
                Accum::Replace,
                m,
                w_in.subrows(d, 2 * d).transpose(),
                T::ONE,
                Par::Seq,
            );
            add_bias(parts.kv, &in_bias[d..]);
            let q_all = MatRef::from_row_major_slice(&*parts.q, st, d);
            let kv = MatRef::from_row_major_slice(&*parts.kv, keys, 2 * d);
            let mut heads_out = MatMut::from_row_major_slice_mut(&mut *parts.heads_out, st, d);
            for head in 0..h {
                let q = q_all.subcols(head * dh, dh);
                let k = kv.subcols(head * dh, dh);
                let v = kv.subcols(d + head * dh, dh);
                let p_slice = &mut parts.probs[head * st * keys..][..st * keys];
                // Block by block of rows, over the keys the block sees.
                for Block { first, rows, seen } in query_blocks(s) {
                    matmul(
                        MatMut::from_row_major_slice_mut(&mut *p_slice, st, keys)
                            .submatrix_mut(first, 0, rows, seen),
                        Accum::Replace,
                        q.subrows(first, rows),
                        k.subrows(0, seen).transpose(),
                        scale,
                        Par::Seq,
                    );
                    vectorized(
                        #[inline(always)]
                        || {
                            let block = &mut p_slice[first * keys..][..rows * keys];
                            for (i, row) in (first..).zip(block.chunks_exact_mut(keys)) {
                                let visible = if s.causal { i + 1 } else { keys };
                                masked_softmax(row, visible, padding);
                            }
                        },
                    );
                    matmul(
                        heads_out.as_mut().submatrix_mut(first, head * dh, rows, dh),
                        Accum::Replace,
                        MatRef::from_row_major_slice(&*p_slice, st, keys)
                            .submatrix(first, 0, rows, seen),
                        v.subrows(0, seen),
                        T::ONE,
                        Par::Seq,
                    );
                }
            }
            let o = MatRef::from_row_major_slice(&*parts.heads_out, st, d);
            matmul(
                MatMut::from_row_major_slice_mut(&mut *y, st, d),
                Accum::Replace,
                o,
                w_out.transpose(),
                T::ONE,
                Par::Seq,
            );
            add_bias(y, out_bias);
        }
    };
    split_batch(
        batch,
        s.flops(),
        (output, st * d),
        (aux, s.aux_len()),
        &samples,
    );
}

/// The gradients [`attention_backward`] writes: the four parameters' (replaced), and
/// those of the queries' sequence and the memory, if asked for (replaced or
/// accumulated, as each says).
#[derive(Debug)]
pub struct AttentionGrads<'a, T> {
    /// dL/d(the queries' sequence), if asked for.
    pub input: Option<(&'a mut [T], Accum)>,
    /// dL/d(memory), if asked for (cross-attention only).
    pub memory: Option<(&'a mut [T], Accum)>,
    /// dL/d`in_proj_weight`.
    pub in_weight: &'a mut [T],
    /// dL/d`in_proj_bias`.
    pub in_bias: &'a mut [T],
    /// dL/d`out_proj.weight`.
    pub out_weight: &'a mut [T],
    /// dL/d`out_proj.bias`.
    pub out_bias: &'a mut [T],
    /// Scratch of [`AttentionShape::params_len`] values: the parameter gradients of the
    /// second half of a batch split across threads, added to the first's.
    pub partial: &'a mut [T],
}

/// The four parameter gradients of one run over samples.
struct ParamGrads<'a, T> {
    in_weight: &'a mut [T],
    in_bias: &'a mut [T],
    out_weight: &'a mut [T],
    out_bias: &'a mut [T],
}

/// Splits `buffer` after `samples` samples of `len` values, if there is a buffer.
#[allow(clippy::type_complexity)]
fn split_grad<T>(
    grad: Option<(&mut [T], Accum)>,
    samples: usize,
    len: usize,
) -> (Option<(&mut [T], Accum)>, Option<(&mut [T], Accum)>) {
    match grad {
        Some((g, accum)) => {
            let (a, b) = g.split_at_mut(samples * len);
            (Some((a, accum)), Some((b, accum)))
        }
        None => (None, None),
    }
}

/// Gradient of [`attention_forward`] (`inputs.key_padding` is not read: the saved
/// weights of hidden keys are 0). A large batch is split in two halves on rayon's
/// threads, the second half's parameter gradients formed in `grads.partial` and added:
/// the split depends on the batch only, so the result does on nothing else.
///
/// # Panics
/// If a length does not match the geometry.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Float>(
    s: &AttentionShape,
    grads: AttentionGrads<'_, T>,
    aux: &mut [T],
    inputs: AttentionInputs<'_, T>,
    in_weight: &[T],
    out_weight: &[T],
    grad_output: &[T],
    batch: usize,
) {
    let (st, keys, d) = (s.steps, s.keys, s.dim);
    check_len("attention grad_output", grad_output.len(), batch * st * d);
    check_len("attention aux", aux.len(), batch * s.aux_len());
    check_len("attention partial", grads.partial.len(), s.params_len());
    let AttentionGrads {
        input,
        memory,
        in_weight: g_wi,
        in_bias: g_bi,
        out_weight: g_wo,
        out_bias: g_bo,
        partial,
    } = grads;
    let whole = ParamGrads {
        in_weight: g_wi,
        in_bias: g_bi,
        out_weight: g_wo,
        out_bias: g_bo,
    };
    let run = |first: usize,
               grads: ParamGrads<'_, T>,
               input: Option<(&mut [T], Accum)>,
               memory: Option<(&mut [T], Accum)>,
               aux: &mut [T]| {
        backward_samples(
            s,
            first,
            grads,
            input,
            memory,
            aux,
            inputs,
            in_weight,
            out_weight,
            grad_output,
        );
    };
    // Backward is about twice forward's work.
    if batch < 2 || 2.0 * s.flops() * (batch as f64) < PARALLEL_MIN_FLOPS {
        run(0, whole, input, memory, aux);
        return;
    }
    let half = batch / 2;
    let (aux0, aux1) = aux.split_at_mut(half * s.aux_len());
    let (input0, input1) = split_grad(input, half, st * d);
    let (memory0, memory1) = split_grad(memory, half, keys * d);
    let (p_wi, rest) = partial.split_at_mut(3 * d * d);
    let (p_bi, rest) = rest.split_at_mut(3 * d);
    let (p_wo, p_bo) = rest.split_at_mut(d * d);
    let second = ParamGrads {
        in_weight: p_wi,
        in_bias: p_bi,
        out_weight: p_wo,
        out_bias: p_bo,
    };
    let ParamGrads {
        in_weight: g_wi,
        in_bias: g_bi,
        out_weight: g_wo,
        out_bias: g_bo,
    } = whole;
    let first = ParamGrads {
        in_weight: &mut *g_wi,
        in_bias: &mut *g_bi,
        out_weight: &mut *g_wo,
        out_bias: &mut *g_bo,
    };
    super::join(
        || run(0, first, input0, memory0, aux0),
        || run(half, second, input1, memory1, aux1),
    );
    for (g, p) in [
        (g_wi, &*p_wi),
        (g_bi, &*p_bi),
        (g_wo, &*p_wo),
        (g_bo, &*p_bo),
    ] {
        for (g, &p) in g.iter_mut().zip(p) {
            *g += p;
        }
    }
}

/// [`attention_backward`] over the samples `first..` whose auxiliary values are `aux`
/// (and whose input and memory gradients are the given slices, if any); the parameter
/// gradients are replaced.
#[allow(clippy::too_many_arguments)]
fn backward_samples<T: Float>(
    s: &AttentionShape,
    first: usize,
    grads: ParamGrads<'_, T>,
    mut grad_input: Option<(&mut [T], Accum)>,
    mut grad_memory: Option<(&mut [T], Accum)>,
    aux: &mut [T],
    inputs: AttentionInputs<'_, T>,
    in_weight: &[T],
    out_weight: &[T],
    grad_output: &[T],
) {
    let (st, keys, d, h) = (s.steps, s.keys, s.dim, s.heads);
    let dh = d / h;
    let scale = T::from_f64(1.0 / (dh as f64).sqrt());
    let w_in = MatRef::from_row_major_slice(in_weight, 3 * d, d);
    let w_out = MatRef::from_row_major_slice(out_weight, d, d);
    let ParamGrads {
        in_weight: grad_in_weight,
        in_bias: grad_in_bias,
        out_weight: grad_out_weight,
        out_bias: grad_out_bias,
    } = grads;
    grad_in_bias.fill(T::ZERO);
    grad_out_bias.fill(T::ZERO);
    for (n, aux) in aux.chunks_exact_mut(s.aux_len()).enumerate() {
        let b = first + n;
        let start = if n == 0 { Accum::Replace } else { Accum::Add };
        let parts = aux_parts(s, aux);
        let gy_slice = &grad_output[b * st * d..][..st * d];
        let gy = MatRef::from_row_major_slice(gy_slice, st, d);
        sum_rows(grad_out_bias, gy_slice);
        // grad W_out = gyᵀ o, then the head outputs' gradient replaces o.
        let o = MatRef::from_row_major_slice(&*parts.heads_out, st, d);
        matmul(
            MatMut::from_row_major_slice_mut(&mut *grad_out_weight, d, d),
            start,
            gy.transpose(),
            o,
            T::ONE,
            Par::Seq,
        );
        matmul(
            MatMut::from_row_major_slice_mut(&mut *parts.heads_out, st, d),
            Accum::Replace,
            gy,
            w_out,
            T::ONE,
            Par::Seq,
        );
        let g_o = MatRef::from_row_major_slice(&*parts.heads_out, st, d);
        let q_all = MatRef::from_row_major_slice(&*parts.q, st, d);
        let kv = MatRef::from_row_major_slice(&*parts.kv, keys, 2 * d);
        let mut g_q = MatMut::from_row_major_slice_mut(&mut *parts.grad_q, st, d);
        let mut g_kv = MatMut::from_row_major_slice_mut(&mut *parts.grad_kv, keys, 2 * d);
        for head in 0..h {
            let (q, k, v) = (
                q_all.subcols(head * dh, dh),
                kv.subcols(head * dh, dh),
                kv.subcols(d + head * dh, dh),
            );
            let g_oh = g_o.subcols(head * dh, dh);
            let p_rows = &parts.probs[head * st * keys..][..st * keys];
            let p = MatRef::from_row_major_slice(p_rows, st, keys);
            // dV = Pᵀ dO_h; dP = dO_h Vᵀ; dA = P ⊙ (dP − rowsum(dP ⊙ P)); dQ = dA K;
            // dK = dAᵀ Q. Rows of P, dP and dA by the query blocks, over the keys each
            // block sees (the rest of P is 0, and the rest of `scratch` is not read);
            // dV and dK by blocks of keys, over the rows that see them.
            for Block { first, rows, seen } in key_blocks(s) {
                matmul(
                    g_kv.as_mut().submatrix_mut(first, d + head * dh, rows, dh),
                    Accum::Replace,
                    p.submatrix(seen, first, st - seen, rows).transpose(),
                    g_oh.subrows(seen, st - seen),
                    T::ONE,
                    Par::Seq,
                );
            }
            for Block { first, rows, seen } in query_blocks(s) {
                matmul(
                    MatMut::from_row_major_slice_mut(&mut *parts.scratch, st, keys)
                        .submatrix_mut(first, 0, rows, seen),
                    Accum::Replace,
                    g_oh.subrows(first, rows),
                    v.subrows(0, seen).transpose(),
                    T::ONE,
                    Par::Seq,
                );
                // Each row's `dP · P` in 16 lanes, so the sum vectorises.
                vectorized(
                    #[inline(always)]
                    || {
                        for (da, pr) in parts.scratch[first * keys..][..rows * keys]
                            .chunks_exact_mut(keys)
                            .zip(p_rows[first * keys..][..rows * keys].chunks_exact(keys))
                        {
                            let (da, pr) = (&mut da[..seen], &pr[..seen]);
                            let dot = lane_sum([&*da, pr], |[d, p]| d * p);
                            for (x, &pv) in da.iter_mut().zip(pr) {
                                *x = pv * (*x - dot) * scale;
                            }
                        }
                    },
                );
                matmul(
                    g_q.as_mut().submatrix_mut(first, head * dh, rows, dh),
                    Accum::Replace,
                    MatRef::from_row_major_slice(&*parts.scratch, st, keys)
                        .submatrix(first, 0, rows, seen),
                    k.subrows(0, seen),
                    T::ONE,
                    Par::Seq,
                );
            }
            let da = MatRef::from_row_major_slice(&*parts.scratch, st, keys);
            for Block { first, rows, seen } in key_blocks(s) {
                matmul(
                    g_kv.as_mut().submatrix_mut(first, head * dh, rows, dh),
                    Accum::Replace,
                    da.submatrix(seen, first, st - seen, rows).transpose(),
                    q.subrows(seen, st - seen),
                    T::ONE,
                    Par::Seq,
                );
            }
        }
        sum_rows(&mut grad_in_bias[..d], parts.grad_q);
        sum_rows(&mut grad_in_bias[d..], parts.grad_kv);
        let g_q = MatRef::from_row_major_slice(&*parts.grad_q, st, d);
        let g_kv = MatRef::from_row_major_slice(&*parts.grad_kv, keys, 2 * d);
        let x = MatRef::from_row_major_slice(&inputs.query[b * st * d..][..st * d], st, d);
        let m = match inputs.memory {
            Some(memory) => {
                MatRef::from_row_major_slice(&memory[b * keys * d..][..keys * d], keys, d)
            }
            None => x,
        };
        let mut g_w = MatMut::from_row_major_slice_mut(&mut *grad_in_weight, 3 * d, d);
        matmul(
            g_w.as_mut().subrows_mut(0, d),
            start,
            g_q.transpose(),
            x,
            T::ONE,
            Par::Seq,
        );
        matmul(
            g_w.as_mut().subrows_mut(d, 2 * d),
            start,
            g_kv.transpose(),
            m,
            T::ONE,
            Par::Seq,
        );
        let (w_q, w_kv) = (w_in.subrows(0, d), w_in.subrows(d, 2 * d));
        if let Some((gi, accum)) = grad_input.as_mut() {
            let mut dst = MatMut::from_row_major_slice_mut(&mut gi[n * st * d..][..st * d], st, d);
            matmul(dst.as_mut(), *accum, g_q, w_q, T::ONE, Par::Seq);
            if inputs.memory.is_none() {
                matmul(dst, Accum::Add, g_kv, w_kv, T::ONE, Par::Seq);
            }
        }
        if inputs.memory.is_some() {
            if let Some((gm, accum)) = grad_memory.as_mut() {
                let dst =
                    MatMut::from_row_major_slice_mut(&mut gm[n * keys * d..][..keys * d], keys, d);
                matmul(dst, *accum, g_kv, w_kv, T::ONE, Par::Seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn layer_norm_matches_finite_differences() {
        // Narrower than the sums' 16 lanes, and lanes with a remainder.
        for width in [5, 21] {
            layer_norm_against_finite_differences(width);
        }
    }

    fn layer_norm_against_finite_differences(width: usize) {
        let x = values(3 * width, 41);
        let gamma: Vec<f64> = values(width, 42).iter().map(|v| v + 1.0).collect();
        let beta = values(width, 43);
        let c = values(x.len(), 44);
        let run = |x: &[f64], g: &[f64], b: &[f64]| {
            let mut y = vec![0.0; x.len()];
            let mut saved = vec![0.0; 6];
            layer_norm_forward(&mut y, &mut saved, x, g, b, width, 1e-5);
            (y, saved)
        };
        let (_, saved) = run(&x, &gamma, &beta);
        let (mut gx, mut gg, mut gb) = (vec![0.0; x.len()], vec![0.0; width], vec![0.0; width]);
        layer_norm_backward(
            Some((&mut gx, Accum::Replace)),
            &mut gg,
            &mut gb,
            &saved,
            &x,
            &gamma,
            &c,
            width,
        );
        let loss = |x: &[f64], g: &[f64], b: &[f64]| dot(&c, &run(x, g, b).0);
        assert_close(
            &gx,
            &numeric_grad(&x, 1e-6, |v| loss(v, &gamma, &beta)),
            1e-7,
        );
        assert_close(
            &gg,
            &numeric_grad(&gamma, 1e-6, |v| loss(&x, v, &beta)),
            1e-7,
        );
        assert_close(
            &gb,
            &numeric_grad(&beta, 1e-6, |v| loss(&x, &gamma, v)),
            1e-7,
        );
    }

    /// Above the threads' line the rows run in two halves and the input gradient beside
    /// the parameters' sums: every row comes out as it does alone, the parameters'
    /// gradients as the sum over rows; `Accum::Add` adds; f32 (the vector lanes at f32
    /// width) agrees with f64.
    #[test]
    fn layer_norm_split_and_f32_agree_with_rows_alone() {
        let (width, rows) = (37, 7000);
        assert!(8.0 * (width * rows) as f64 >= PARALLEL_MIN_FLOPS);
        let x = values(rows * width, 71);
        let gamma: Vec<f64> = values(width, 72).iter().map(|v| v + 1.0).collect();
        let beta = values(width, 73);
        let c = values(x.len(), 74);
        let run = |x: &[f64], c: &[f64], accum: Accum, start: f64| {
            let n = x.len() / width;
            let (mut y, mut saved) = (vec![0.0; x.len()], vec![0.0; 2 * n]);
            layer_norm_forward(&mut y, &mut saved, x, &gamma, &beta, width, 1e-5);
            let mut gx = vec![start; x.len()];
            let (mut gg, mut gb) = (vec![9.0; width], vec![9.0; width]);
            let grads = Some((&mut gx[..], accum));
            layer_norm_backward(grads, &mut gg, &mut gb, &saved, x, &gamma, c, width);
            (y, gx, gg, gb)
        };
        let (y, gx, gg, gb) = run(&x, &c, Accum::Replace, 0.0);
        // Every row as it comes out alone; the parameters' gradients as the sums of the
        // rows' own (in another order, so close rather than equal).
        let (mut gg_all, mut gb_all) = (vec![0.0; width], vec![0.0; width]);
        for r in 0..rows {
            let range = r * width..(r + 1) * width;
            let (y1, gx1, gg1, gb1) =
                run(&x[range.clone()], &c[range.clone()], Accum::Replace, 0.0);
            assert_eq!(y[range.clone()], y1[..]);
            assert_eq!(gx[range], gx1[..]);
            gg_all.iter_mut().zip(&gg1).for_each(|(a, v)| *a += v);
            gb_all.iter_mut().zip(&gb1).for_each(|(a, v)| *a += v);
        }
        assert_close(&gg, &gg_all, 1e-9);
        assert_close(&gb, &gb_all, 1e-9);
        let (_, gx_add, ..) = run(&x, &c, Accum::Add, 0.5);
        let shifted: Vec<f64> = gx.iter().map(|v| v + 0.5).collect();
        assert_close(&gx_add, &shifted, 1e-12);

        let (x32, g32, b32, c32) = (narrow(&x), narrow(&gamma), narrow(&beta), narrow(&c));
        let (mut y32, mut saved32) = (vec![0.0f32; x.len()], vec![0.0f32; 2 * rows]);
        layer_norm_forward(&mut y32, &mut saved32, &x32, &g32, &b32, width, 1e-5);
        let mut gx32 = vec![0.0f32; x.len()];
        let (mut gg32, mut gb32) = (vec![0.0f32; width], vec![0.0f32; width]);
        let grads = Some((&mut gx32[..], Accum::Replace));
        layer_norm_backward(
            grads, &mut gg32, &mut gb32, &saved32, &x32, &g32, &c32, width,
        );
        assert_close(&widen(&y32), &y, 1e-4);
        assert_close(&widen(&gx32), &gx, 1e-4);
        assert_close(&widen(&gg32), &gg, 1e-3);
        assert_close(&widen(&gb32), &gb, 1e-3);
    }

    /// The prefix path (no padding: the vector lanes and `fast_exp` in f32) against
    /// softmax in f64 with `exp`; hidden keys are 0; a row that sees no key is all zeros.
    #[test]
    fn masked_softmax_of_a_prefix_matches_the_definition() {
        for (len, visible) in [(1, 1), (7, 3), (16, 16), (40, 33), (40, 40), (9, 0)] {
            let row: Vec<f64> = values(len, 80 + len as u64)
                .iter()
                .map(|v| 8.0 * v)
                .collect();
            let mut p64 = row.clone();
            let mut p32 = narrow(&row);
            masked_softmax(&mut p64, visible, None);
            crate::simd::vectorized(
                #[inline(always)]
                || masked_softmax(&mut p32, visible, None),
            );
            let max = row[..visible]
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = row[..visible].iter().map(|v| (v - max).exp()).sum();
            let expected: Vec<f64> = (0..len)
                .map(|j| {
                    if j < visible {
                        (row[j] - max).exp() / total
                    } else {
                        0.0
                    }
                })
                .collect();
            assert_close(&p64, &expected, 1e-14);
            assert_close(&widen(&p32), &expected, 1e-6);
            assert!(p32[visible..].iter().all(|&v| v == 0.0));
        }
    }

    /// Query and key blocks tile the rows without gap or overlap, each with the keys
    /// (or first query) the causal mask allows, and cut a causal sequence into at most
    /// 16 blocks of a multiple of 16 rows.
    #[test]
    fn blocks_cover_every_query_and_key_once() {
        for (steps, keys, causal) in [
            (37, 37, true),
            (32, 32, true),
            (5, 5, true),
            (37, 37, false),
            (3, 5, true),
            (0, 0, true),
            (300, 300, true),
            (1024, 1024, true),
        ] {
            let s = AttentionShape {
                steps,
                keys,
                dim: 4,
                heads: 1,
                causal,
            };
            let whole = !(causal && keys == steps);
            let (mut next, mut count) = (0, 0);
            for b in query_blocks(&s) {
                assert_eq!((b.first, b.rows > 0), (next, true), "{s:?}");
                next += b.rows;
                count += 1;
                // A block sees every key a query of it may see, and no later one.
                assert_eq!(b.seen, if whole { keys } else { b.first + b.rows });
            }
            assert_eq!(next, steps, "{s:?}");
            if !whole {
                let size = causal_block(steps);
                assert_eq!(count, steps.div_ceil(size));
                assert!(size.is_multiple_of(CAUSAL_BLOCK) && count <= MAX_CAUSAL_BLOCKS);
            }
            next = 0;
            for b in key_blocks(&s) {
                assert_eq!((b.first, b.rows > 0), (next, true), "{s:?}");
                next += b.rows;
                assert_eq!(b.seen, if whole { 0 } else { b.first });
            }
            assert_eq!(next, keys, "{s:?}");
        }
    }

    /// Self-attention (with and without the causal mask) and cross-attention (with and
    /// without key padding, one sample's keys all padded for one query row's worth of
    /// keys) against finite differences, every input and parameter.
    #[test]
    fn attention_matches_finite_differences() {
        // 37 steps: causal self-attention in blocks of 16, 16 and 5 queries.
        let cases = [
            (4, None, false),
            (4, None, true),
            (37, None, false),
            (37, None, true),
            (3, Some(5), false),
            (3, Some(5), true),
        ];
        for (steps, memory, padded) in cases {
            for causal in [false, true] {
                if memory.is_some() && causal {
                    continue;
                }
                check_attention(steps, memory, padded, causal);
            }
        }
    }

    fn check_attention(steps: usize, memory: Option<usize>, padded: bool, causal: bool) {
        let keys = memory.unwrap_or(steps);
        let s = AttentionShape {
            steps,
            keys,
            dim: 6,
            heads: 2,
            causal,
        };
        let batch = 2;
        let d = s.dim;
        let x = values(batch * steps * d, 51);
        let m = memory.map(|k| values(batch * k * d, 57));
        // Sample 0 hides keys 1 and 3; sample 1 every key but 0 (self-attention) or
        // every key (cross-attention: its queries see nothing).
        let padding: Option<Vec<f64>> = padded.then(|| {
            (0..batch * keys)
                .map(|i| {
                    let (b, j) = (i / keys, i % keys);
                    let hidden =
                        b == 0 && (j == 1 || j == 3) || b == 1 && (memory.is_some() || j != 0);
                    if hidden {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect()
        });
        let params = values(4 * d * d + 4 * d, 52);
        let c = values(x.len(), 56);
        let split = |p: &[f64]| -> [Vec<f64>; 4] {
            let (wi, rest) = p.split_at(3 * d * d);
            let (bi, rest) = rest.split_at(3 * d);
            let (wo, bo) = rest.split_at(d * d);
            [wi.to_vec(), bi.to_vec(), wo.to_vec(), bo.to_vec()]
        };
        let run = |x: &[f64], m: Option<&[f64]>, p: &[f64]| {
            let [wi, bi, wo, bo] = split(p);
            let mut y = vec![0.0; x.len()];
            let mut aux = vec![0.0; batch * s.aux_len()];
            let inputs = AttentionInputs {
                query: x,
                memory: m,
                key_padding: padding.as_deref(),
            };
            attention_forward(&s, &mut y, &mut aux, inputs, &wi, &bi, &wo, &bo, batch);
            (y, aux)
        };
        let (_, mut aux) = run(&x, m.as_deref(), &params);
        let mut gx = vec![0.0; x.len()];
        let mut gm = vec![0.0; m.as_ref().map_or(0, Vec::len)];
        let mut gp = vec![0.0; params.len()];
        {
            let (gwi, rest) = gp.split_at_mut(3 * d * d);
            let (gbi, rest) = rest.split_at_mut(3 * d);
            let (gwo, gbo) = rest.split_at_mut(d * d);
            let [wi, _, wo, _] = split(&params);
            let mut partial = vec![0.0; s.params_len()];
            let grads = AttentionGrads {
                input: Some((&mut gx, Accum::Replace)),
                memory: m.is_some().then_some((&mut gm[..], Accum::Replace)),
                in_weight: gwi,
                in_bias: gbi,
                out_weight: gwo,
                out_bias: gbo,
                partial: &mut partial,
            };
            let inputs = AttentionInputs {
                query: &x,
                memory: m.as_deref(),
                key_padding: padding.as_deref(),
            };
            attention_backward(&s, grads, &mut aux, inputs, &wi, &wo, &c, batch);
        }
        let loss = |x: &[f64], m: Option<&[f64]>, p: &[f64]| dot(&c, &run(x, m, p).0);
        let tol = 1e-7;
        assert_close(
            &gx,
            &numeric_grad(&x, 1e-6, |v| loss(v, m.as_deref(), &params)),
            tol,
        );
        assert_close(
            &gp,
            &numeric_grad(&params, 1e-6, |v| loss(&x, m.as_deref(), v)),
            tol,
        );
        if let Some(m) = &m {
            assert_close(
                &gm,
                &numeric_grad(m, 1e-6, |v| loss(&x, Some(v), &params)),
                tol,
            );
        }
        if let Some(padding) = &padding {
            // A hidden key changes nothing: perturb its memory row, the output stays.
            let y = run(&x, m.as_deref(), &params).0;
            let mut m2 = m.clone().unwrap_or_else(|| x.clone());
            let hidden = padding.iter().position(|&p| p != 0.0).unwrap();
            let row = &mut m2[hidden * d..][..d];
            row.iter_mut().for_each(|v| *v += 3.0);
            if m.is_some() {
                assert_eq!(run(&x, Some(&m2), &params).0, y);
            }
        }
    }

    /// A batch large enough to split across threads gives what its samples give one
    /// at a time: outputs bit for bit, gradients summed in another order.
    #[test]
    fn split_batches_give_the_serial_result() {
        let s = AttentionShape {
            steps: 16,
            keys: 12,
            dim: 32,
            heads: 4,
            causal: false,
        };
        let batch = 8;
        assert!(2.0 * s.flops() * batch as f64 >= PARALLEL_MIN_FLOPS);
        let (sq, sk) = (s.steps * s.dim, s.keys * s.dim);
        let x = values(batch * sq, 61);
        let m = values(batch * sk, 62);
        let padding: Vec<f64> = (0..batch * s.keys)
            .map(|i| f64::from(u8::from(i % s.keys >= 9 + i / s.keys % 3)))
            .collect();
        let params = values(s.params_len(), 63);
        let c = values(batch * sq, 64);
        let d = s.dim;
        let (wi, rest) = params.split_at(3 * d * d);
        let (bi, rest) = rest.split_at(3 * d);
        let (wo, bo) = rest.split_at(d * d);
        // (output, input gradient, memory gradient, parameter gradients) of samples
        // `range`.
        let run = |range: std::ops::Range<usize>| {
            let n = range.len();
            let inputs = AttentionInputs {
                query: &x[range.start * sq..range.end * sq],
                memory: Some(&m[range.start * sk..range.end * sk]),
                key_padding: Some(&padding[range.start * s.keys..range.end * s.keys]),
            };
            let mut y = vec![0.0; n * sq];
            let mut aux = vec![0.0; n * s.aux_len()];
            attention_forward(&s, &mut y, &mut aux, inputs, wi, bi, wo, bo, n);
            let (mut gx, mut gm) = (vec![0.0; n * sq], vec![0.0; n * sk]);
            let mut g = vec![0.0; params.len()];
            let mut partial = vec![0.0; s.params_len()];
            let (gwi, rest) = g.split_at_mut(3 * d * d);
            let (gbi, rest) = rest.split_at_mut(3 * d);
            let (gwo, gbo) = rest.split_at_mut(d * d);
            let grads = AttentionGrads {
                input: Some((&mut gx, Accum::Replace)),
                memory: Some((&mut gm, Accum::Replace)),
                in_weight: gwi,
                in_bias: gbi,
                out_weight: gwo,
                out_bias: gbo,
                partial: &mut partial,
            };
            let upstream = &c[range.start * sq..range.end * sq];
            attention_backward(&s, grads, &mut aux, inputs, wi, wo, upstream, n);
            (y, gx, gm, g)
        };
        let (y, gx, gm, g) = run(0..batch);
        let mut g_serial = vec![0.0; params.len()];
        for b in 0..batch {
            let (y1, gx1, gm1, g1) = run(b..b + 1);
            assert_eq!(y[b * sq..][..sq], y1[..]);
            assert_eq!(gx[b * sq..][..sq], gx1[..]);
            assert_eq!(gm[b * sk..][..sk], gm1[..]);
            for (a, v) in g_serial.iter_mut().zip(&g1) {
                *a += v;
            }
        }
        assert_close(&g, &g_serial, 1e-12);
    }

    #[test]
    fn embeddings_look_up_rows_and_scatter_gradients() {
        let table = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut y = [0.0; 6];
        embedding_forward(&mut y, &[2.0, 0.0, 7.0], &table, 2);
        assert_eq!(y, [5.0, 6.0, 1.0, 2.0, 0.0, 0.0]);
        let mut g = [0.0; 6];
        embedding_backward(&mut g, &[2.0, 2.0, 0.5], &[1.0, 1.0, 2.0, 2.0, 9.0, 9.0], 2);
        assert_eq!(g, [0.0, 0.0, 0.0, 0.0, 3.0, 3.0]);
        assert_eq!(token_index(3.0_f32, 3), None);
        assert_eq!(token_index(-1.0_f32, 3), None);
    }
}
