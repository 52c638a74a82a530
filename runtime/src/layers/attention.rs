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
//! - Multi-head self-attention, as `nn.MultiheadAttention(dim, heads, batch_first=True)`
//!   called with `(x, x, x)`: `[q k v] = x W_inᵀ + b_in`; per head
//!   `softmax(q kᵀ / √d_head + mask) v`; heads concatenated; `y = o W_outᵀ + b_out`. The
//!   causal mask hides later steps.
//!
//! # Shapes
//! Samples are `[steps, dim]`; the embedding's input is `[steps]` of ids.

use faer::{Accum, MatMut, MatRef, Par};

use super::matmul;
use super::{check_len, store};
use crate::Float;

/// Layer normalisation forward over rows of `width`; `saved` (2 values per row) keeps
/// the mean and `1/σ` for backward.
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
    let eps = T::from_f64(eps);
    let inv_n = T::from_f64(1.0 / width as f64);
    for ((y, x), st) in output
        .chunks_exact_mut(width)
        .zip(input.chunks_exact(width))
        .zip(saved.chunks_exact_mut(2))
    {
        let mean = x.iter().copied().sum::<T>() * inv_n;
        let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<T>() * inv_n;
        let inv_std = T::ONE / (var + eps).sqrt();
        st[0] = mean;
        st[1] = inv_std;
        for i in 0..width {
            y[i] = gamma[i] * (x[i] - mean) * inv_std + beta[i];
        }
    }
}

/// Gradient of [`layer_norm_forward`]; `grad_gamma` and `grad_beta` are replaced.
///
/// # Panics
/// If a length does not match.
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
    check_len("layer_norm grad_output", grad_output.len(), input.len());
    grad_gamma.fill(T::ZERO);
    grad_beta.fill(T::ZERO);
    for ((g, x), st) in grad_output
        .chunks_exact(width)
        .zip(input.chunks_exact(width))
        .zip(saved.chunks_exact(2))
    {
        for i in 0..width {
            grad_gamma[i] += g[i] * (x[i] - st[0]) * st[1];
            grad_beta[i] += g[i];
        }
    }
    let Some((grad_input, accum)) = grad_input else {
        return;
    };
    let inv_n = T::from_f64(1.0 / width as f64);
    for (((gi, g), x), st) in grad_input
        .chunks_exact_mut(width)
        .zip(grad_output.chunks_exact(width))
        .zip(input.chunks_exact(width))
        .zip(saved.chunks_exact(2))
    {
        let (mean, inv_std) = (st[0], st[1]);
        let mut sum_d = T::ZERO;
        let mut sum_dx = T::ZERO;
        for i in 0..width {
            let d = g[i] * gamma[i];
            sum_d += d;
            sum_dx += d * (x[i] - mean) * inv_std;
        }
        let (mean_d, mean_dx) = (sum_d * inv_n, sum_dx * inv_n);
        for i in 0..width {
            let x_hat = (x[i] - mean) * inv_std;
            store(
                &mut gi[i],
                inv_std * (g[i] * gamma[i] - mean_d - x_hat * mean_dx),
                accum,
            );
        }
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

struct AuxParts<'a, T> {
    qkv: &'a mut [T],
    probs: &'a mut [T],
    heads_out: &'a mut [T],
    grad_qkv: &'a mut [T],
    scratch: &'a mut [T],
}

fn aux_parts<'a, T>(s: &AttentionShape, aux: &'a mut [T]) -> AuxParts<'a, T> {
    let (st, d) = (s.steps, s.dim);
    let (qkv, rest) = aux.split_at_mut(3 * st * d);
    let (probs, rest) = rest.split_at_mut(s.heads * st * st);
    let (heads_out, rest) = rest.split_at_mut(st * d);
    let (grad_qkv, scratch) = rest.split_at_mut(3 * st * d);
    AuxParts {
        qkv,
        probs,
        heads_out,
        grad_qkv,
        scratch,
    }
}

/// Multi-head self-attention forward.
///
/// # Panics
/// If a length does not match the geometry or `heads` does not divide `dim`.
pub fn attention_forward<T: Float>(
    s: &AttentionShape,
    output: &mut [T],
    aux: &mut [T],
    input: &[T],
    in_weight: &[T],
    in_bias: &[T],
    out_weight: &[T],
    out_bias: &[T],
    batch: usize,
) {
    let (st, d, h) = (s.steps, s.dim, s.heads);
    assert_eq!(d % h, 0, "heads must divide dim");
    let dh = d / h;
    check_len("attention input", input.len(), batch * st * d);
    check_len("attention output", output.len(), batch * st * d);
    check_len("attention aux", aux.len(), batch * s.aux_len());
    let scale = T::from_f64(1.0 / (dh as f64).sqrt());
    let w_in = MatRef::from_row_major_slice(in_weight, 3 * d, d);
    let w_out = MatRef::from_row_major_slice(out_weight, d, d);
    for b in 0..batch {
        let parts = aux_parts(s, &mut aux[b * s.aux_len()..][..s.aux_len()]);
        let x = MatRef::from_row_major_slice(&input[b * st * d..][..st * d], st, d);
        matmul(
            MatMut::from_row_major_slice_mut(&mut *parts.qkv, st, 3 * d),
            Accum::Replace,
            x,
            w_in.transpose(),
            T::ONE,
            Par::Seq,
        );
        for row in parts.qkv.chunks_exact_mut(3 * d) {
            for (v, &bias) in row.iter_mut().zip(in_bias) {
                *v += bias;
            }
        }
        let qkv = MatRef::from_row_major_slice(&*parts.qkv, st, 3 * d);
        let mut heads_out = MatMut::from_row_major_slice_mut(&mut *parts.heads_out, st, d);
        for head in 0..h {
            let q = qkv.subcols(head * dh, dh);
            let k = qkv.subcols(d + head * dh, dh);
            let v = qkv.subcols(2 * d + head * dh, dh);
            let p_slice = &mut parts.probs[head * st * st..][..st * st];
            matmul(
                MatMut::from_row_major_slice_mut(&mut *p_slice, st, st),
                Accum::Replace,
                q,
                k.transpose(),
                scale,
                Par::Seq,
            );
            for (i, row) in p_slice.chunks_exact_mut(st).enumerate() {
                let visible = if s.causal { i + 1 } else { st };
                let max = row[..visible].iter().copied().fold(row[0], T::max);
                let mut sum = T::ZERO;
                for p in &mut row[..visible] {
                    *p = (*p - max).exp();
                    sum += *p;
                }
                let inv = T::ONE / sum;
                row[..visible].iter_mut().for_each(|p| *p *= inv);
                row[visible..].fill(T::ZERO);
            }
            let p = MatRef::from_row_major_slice(&*p_slice, st, st);
            matmul(
                heads_out.as_mut().subcols_mut(head * dh, dh),
                Accum::Replace,
                p,
                v,
                T::ONE,
                Par::Seq,
            );
        }
        let o = MatRef::from_row_major_slice(&*parts.heads_out, st, d);
        let y = &mut output[b * st * d..][..st * d];
        matmul(
            MatMut::from_row_major_slice_mut(&mut *y, st, d),
            Accum::Replace,
            o,
            w_out.transpose(),
            T::ONE,
            Par::Seq,
        );
        for row in y.chunks_exact_mut(d) {
            for (v, &bias) in row.iter_mut().zip(out_bias) {
                *v += bias;
            }
        }
    }
}

/// Gradient of [`attention_forward`]. The four parameter gradients are replaced;
/// `grad_input`, if asked for, is replaced or accumulated.
///
/// # Panics
/// If a length does not match the geometry.
pub fn attention_backward<T: Float>(
    s: &AttentionShape,
    grad_input: Option<(&mut [T], Accum)>,
    grad_in_weight: &mut [T],
    grad_in_bias: &mut [T],
    grad_out_weight: &mut [T],
    grad_out_bias: &mut [T],
    aux: &mut [T],
    input: &[T],
    in_weight: &[T],
    out_weight: &[T],
    grad_output: &[T],
    batch: usize,
) {
    let (st, d, h) = (s.steps, s.dim, s.heads);
    let dh = d / h;
    check_len("attention grad_output", grad_output.len(), batch * st * d);
    let scale = T::from_f64(1.0 / (dh as f64).sqrt());
    let w_in = MatRef::from_row_major_slice(in_weight, 3 * d, d);
    let w_out = MatRef::from_row_major_slice(out_weight, d, d);
    grad_in_bias.fill(T::ZERO);
    grad_out_bias.fill(T::ZERO);
    let mut grad_input = grad_input;
    for b in 0..batch {
        let first = if b == 0 { Accum::Replace } else { Accum::Add };
        let parts = aux_parts(s, &mut aux[b * s.aux_len()..][..s.aux_len()]);
        let gy_slice = &grad_output[b * st * d..][..st * d];
        let gy = MatRef::from_row_major_slice(gy_slice, st, d);
        for row in gy_slice.chunks_exact(d) {
            for (gb, &g) in grad_out_bias.iter_mut().zip(row) {
                *gb += g;
            }
        }
        // grad W_out = gyᵀ o, then the head outputs' gradient replaces o.
        let o = MatRef::from_row_major_slice(&*parts.heads_out, st, d);
        matmul(
            MatMut::from_row_major_slice_mut(&mut *grad_out_weight, d, d),
            first,
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
        let qkv = MatRef::from_row_major_slice(&*parts.qkv, st, 3 * d);
        let mut g_qkv = MatMut::from_row_major_slice_mut(&mut *parts.grad_qkv, st, 3 * d);
        for head in 0..h {
            let (q, k, v) = (
                qkv.subcols(head * dh, dh),
                qkv.subcols(d + head * dh, dh),
                qkv.subcols(2 * d + head * dh, dh),
            );
            let g_oh = g_o.subcols(head * dh, dh);
            let p = MatRef::from_row_major_slice(&parts.probs[head * st * st..][..st * st], st, st);
            // dV = Pᵀ dO_h; dP = dO_h Vᵀ; dA = P ⊙ (dP − rowsum(dP ⊙ P)).
            matmul(
                g_qkv.as_mut().subcols_mut(2 * d + head * dh, dh),
                Accum::Replace,
                p.transpose(),
                g_oh,
                T::ONE,
                Par::Seq,
            );
            matmul(
                MatMut::from_row_major_slice_mut(&mut *parts.scratch, st, st),
                Accum::Replace,
                g_oh,
                v.transpose(),
                T::ONE,
                Par::Seq,
            );
            let p_rows = &parts.probs[head * st * st..][..st * st];
            for (da, pr) in parts
                .scratch
                .chunks_exact_mut(st)
                .zip(p_rows.chunks_exact(st))
            {
                let dot: T = da.iter().zip(pr).map(|(&a, &b)| a * b).sum();
                for (x, &pv) in da.iter_mut().zip(pr) {
                    *x = pv * (*x - dot) * scale;
                }
            }
            let da = MatRef::from_row_major_slice(&*parts.scratch, st, st);
            matmul(
                g_qkv.as_mut().subcols_mut(head * dh, dh),
                Accum::Replace,
                da,
                k,
                T::ONE,
                Par::Seq,
            );
            matmul(
                g_qkv.as_mut().subcols_mut(d + head * dh, dh),
                Accum::Replace,
                da.transpose(),
                q,
                T::ONE,
                Par::Seq,
            );
        }
        for row in parts.grad_qkv.chunks_exact(3 * d) {
            for (gb, &g) in grad_in_bias.iter_mut().zip(row) {
                *gb += g;
            }
        }
        let g_qkv = MatRef::from_row_major_slice(&*parts.grad_qkv, st, 3 * d);
        let x = MatRef::from_row_major_slice(&input[b * st * d..][..st * d], st, d);
        matmul(
            MatMut::from_row_major_slice_mut(&mut *grad_in_weight, 3 * d, d),
            first,
            g_qkv.transpose(),
            x,
            T::ONE,
            Par::Seq,
        );
        if let Some((gi, accum)) = grad_input.as_mut() {
            let dst = MatMut::from_row_major_slice_mut(&mut gi[b * st * d..][..st * d], st, d);
            matmul(dst, *accum, g_qkv, w_in, T::ONE, Par::Seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn layer_norm_matches_finite_differences() {
        let width = 5;
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

    #[test]
    fn attention_matches_finite_differences() {
        for causal in [false, true] {
            let s = AttentionShape {
                steps: 4,
                dim: 6,
                heads: 2,
                causal,
            };
            let batch = 2;
            let d = s.dim;
            let x = values(batch * s.steps * d, 51);
            let w_in = values(3 * d * d, 52);
            let b_in = values(3 * d, 53);
            let w_out = values(d * d, 54);
            let b_out = values(d, 55);
            let c = values(x.len(), 56);
            let run = |x: &[f64], wi: &[f64], bi: &[f64], wo: &[f64], bo: &[f64]| {
                let mut y = vec![0.0; x.len()];
                let mut aux = vec![0.0; batch * s.aux_len()];
                attention_forward(&s, &mut y, &mut aux, x, wi, bi, wo, bo, batch);
                (y, aux)
            };
            let (_, mut aux) = run(&x, &w_in, &b_in, &w_out, &b_out);
            let (mut gx, mut gwi, mut gbi, mut gwo, mut gbo) = (
                vec![0.0; x.len()],
                vec![0.0; w_in.len()],
                vec![0.0; 3 * d],
                vec![0.0; d * d],
                vec![0.0; d],
            );
            attention_backward(
                &s,
                Some((&mut gx, Accum::Replace)),
                &mut gwi,
                &mut gbi,
                &mut gwo,
                &mut gbo,
                &mut aux,
                &x,
                &w_in,
                &w_out,
                &c,
                batch,
            );
            let loss = |x: &[f64], wi: &[f64], bi: &[f64], wo: &[f64], bo: &[f64]| {
                dot(&c, &run(x, wi, bi, wo, bo).0)
            };
            let tol = 1e-7;
            assert_close(
                &gx,
                &numeric_grad(&x, 1e-6, |v| loss(v, &w_in, &b_in, &w_out, &b_out)),
                tol,
            );
            assert_close(
                &gwi,
                &numeric_grad(&w_in, 1e-6, |v| loss(&x, v, &b_in, &w_out, &b_out)),
                tol,
            );
            assert_close(
                &gbi,
                &numeric_grad(&b_in, 1e-6, |v| loss(&x, &w_in, v, &w_out, &b_out)),
                tol,
            );
            assert_close(
                &gwo,
                &numeric_grad(&w_out, 1e-6, |v| loss(&x, &w_in, &b_in, v, &b_out)),
                tol,
            );
            assert_close(
                &gbo,
                &numeric_grad(&b_out, 1e-6, |v| loss(&x, &w_in, &b_in, &w_out, v)),
                tol,
            );
        }
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
