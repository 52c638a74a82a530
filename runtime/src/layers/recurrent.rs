//! Recurrent layers over `[steps, features]` samples: Elman RNN (tanh), LSTM and GRU,
//! with PyTorch's gate order, parameter layout and equations, and backpropagation
//! through time over the compile-time number of steps.
//!
//! With `x_t` the input and `h_{t-1}` the previous hidden state (zero at `t = 0`):
//!
//! - RNN: `h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`.
//! - LSTM, gates `i, f, g, o` in that order: `i = σ(..)`, `f = σ(..)`, `g = tanh(..)`,
//!   `o = σ(..)` of `W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`; `c_t = f c_{t-1} + i g`,
//!   `h_t = o tanh(c_t)`.
//! - GRU, gates `r, z, n`: `r = σ(W_ir x + b_ir + W_hr h + b_hr)`, `z` likewise,
//!   `n = tanh(W_in x + b_in + r (W_hn h + b_hn))`, `h_t = (1 − z) n + z h_{t-1}`.
//!
//! The layer returns every step's hidden state (`[steps, hidden]`); `LastStep` keeps
//! the last. `aux` keeps the gates of every step of every sample together, ahead of
//! the rest of each sample's values ([`regions`]), so the input projections of all
//! samples and steps are one GEMM; each step then adds `W_hh h_{t-1}` for the whole
//! batch in one product over strided rows (`panels`' kernel where it applies, faer's
//! GEMM elsewhere). Backward walks the steps in reverse, turning
//! the stored gate activations into gate gradients in place and adding `W_hhᵀ`'s share
//! onto the previous step's output gradient, then takes each weight gradient as one
//! GEMM over all samples and steps.
//!
//! Samples never meet inside the recurrence, so a large enough batch runs as two
//! halves on two threads, each with single-threaded GEMMs (the per-step products are
//! far too small for a multi-threaded GEMM to pay). The weight gradients are split by
//! rows instead, the input gradient by samples. Backward takes `tanh(c_t)` over a
//! whole row into a scratch row of `aux`, so the f32 path vectorises it: called per
//! value, the library `tanhf` was a fifth of an LSTM training step.
//!
//! # Shapes
//! `input`: `batch x [steps, features]`; `output`: `batch x [steps, hidden]`;
//! `weight_ih`: `[G·hidden, features]`, `weight_hh`: `[G·hidden, hidden]`, biases
//! `[G·hidden]` with `G` = 1 (RNN), 4 (LSTM), 3 (GRU); `aux`: [`RecurrentShape::aux_len`]
//! per sample, laid out as [`regions`] says.
//!
//! # Initialisation
//! PyTorch's: every weight and bias ~ `U(-1/√hidden, 1/√hidden)`.

use faer::{Accum, MatMut, MatRef, Par};

use super::matmul;
use super::panels::{self, add_product, Rhs};
use super::sparse::transpose;
use super::{check_len, for_row_blocks, store};
use super::{largest_part, split_batch, Both, PerSample};
use crate::simd::vectorized;
use crate::Float;

pub use kiln_shapes::{Cell, RecurrentShape};

/// Rows of gate products (`batch · steps`) from which the forward pass transposes the
/// weights first.
const TRANSPOSE_MIN_ROWS: usize = 64;

/// Forward pass over every step; `aux` keeps what backward needs. The two halves of a
/// large enough batch run their recurrences on two threads: samples are independent,
/// so nothing is shared between them until the weight gradients.
///
/// The gate products `x Wᵢₕᵀ` and `h Wₕₕᵀ` read the weights (PyTorch's `[gates, in]`
/// layout) transposed. faer runs these thin products (16 rows a thread at the T5
/// benchmark's batch 32) at about 80 GFLOP/s from that layout and about 100 from the
/// weights stored `[in, gates]`, which it reads without packing them for every step
/// (a scratch comparison of both layouts, not in the repo). So from
/// `TRANSPOSE_MIN_ROWS` rows on, the weights are first copied transposed into
/// `scratch` ([`RecurrentShape::scratch_len`] values), once per pass. Where the
/// packed product of `panels` applies (f32, AVX2 the widest vectors, up to 64 rows a
/// thread, gate columns a multiple of 16), `Wₕₕᵀ` is packed for it instead.
///
/// # Panics
/// If a length does not match the geometry.
pub fn recurrent_forward<T: Float>(
    s: &RecurrentShape,
    output: &mut [T],
    aux: &mut [T],
    scratch: &mut [T],
    input: &[T],
    weight_ih: &[T],
    weight_hh: &[T],
    bias_ih: &[T],
    bias_hh: &[T],
    batch: usize,
) {
    let (steps, f, h, w) = (s.steps, s.features, s.hidden, s.width());
    let a = s.aux_len();
    check_len("recurrent input", input.len(), batch * steps * f);
    check_len("recurrent output", output.len(), batch * steps * h);
    check_len("recurrent aux", aux.len(), batch * a);
    check_len("recurrent weight_ih", weight_ih.len(), w * f);
    check_len("recurrent weight_hh", weight_hh.len(), w * h);
    check_len("recurrent bias_ih", bias_ih.len(), w);
    check_len("recurrent bias_hh", bias_hh.len(), w);
    check_len("recurrent scratch", scratch.len(), s.scratch_len());
    let (t_ih, t_hh) = scratch.split_at_mut(f * w);
    let transposed = batch * steps >= TRANSPOSE_MIN_ROWS;
    let w_ih = if transposed {
        transpose(t_ih, weight_ih, w, f);
        MatRef::from_row_major_slice(&*t_ih, f, w)
    } else {
        MatRef::from_row_major_slice(weight_ih, w, f).transpose()
    };
    let rows = largest_part(batch, s.flops_per_sample());
    let w_hh = if panels::applies::<T>(rows, h, w) {
        panels::pack(t_hh, weight_hh, h, w, true);
        Rhs::Packed(&*t_hh)
    } else if transposed {
        transpose(t_hh, weight_hh, w, h);
        Rhs::Plain(MatRef::from_row_major_slice(&*t_hh, h, w))
    } else {
        Rhs::Plain(MatRef::from_row_major_slice(weight_hh, w, h).transpose())
    };
    split_batch(
        batch,
        s.flops_per_sample(),
        (output, steps * h),
        regions(s, aux, batch),
        &|first, output: &mut [T], (gates, rest): (&mut [T], &mut [T])| {
            let count = output.len() / (steps * h);
            let input = &input[first * steps * f..][..count * steps * f];
            forward_samples(
                s, output, gates, rest, input, w_ih, w_hh, bias_ih, bias_hh, count,
            );
        },
    );
}

/// [`recurrent_forward`] on `batch` consecutive samples, on the calling thread, with
/// the weights as `Wᵢₕᵀ` (`in × gates`) and `Wₕₕᵀ` (`hidden × gates`); `gates` and
/// `rest` are these samples' parts of the two [`regions`] of `aux`.
fn forward_samples<T: Float>(
    s: &RecurrentShape,
    output: &mut [T],
    gates: &mut [T],
    rest: &mut [T],
    input: &[T],
    w_ih_t: MatRef<'_, T>,
    w_hh_t: Rhs<'_, T>,
    bias_ih: &[T],
    bias_hh: &[T],
    batch: usize,
) {
    let (steps, f, h, w) = (s.steps, s.features, s.hidden, s.width());
    let r = rest_len(s);
    let gru = s.cell == Cell::Gru;
    // Input projections of every step of every sample: one GEMM, as the gate rows of
    // all samples follow each other. Then the biases that add.
    let x = MatRef::from_row_major_slice(input, batch * steps, f);
    let all_gates = MatMut::from_row_major_slice_mut(gates, batch * steps, w);
    matmul(all_gates, Accum::Replace, x, w_ih_t, T::ONE, Par::Seq);
    // Inside `vectorized`: this function is generic, so it is compiled in the crate
    // that uses the model, for that crate's processor (SSE2 under cargo's defaults).
    vectorized(
        #[inline(always)]
        || {
            for row in gates.chunks_exact_mut(w) {
                if gru {
                    add_assign(row, bias_ih);
                } else {
                    for ((g, &bi), &bh) in row.iter_mut().zip(bias_ih).zip(bias_hh) {
                        *g += bi + bh;
                    }
                }
            }
        },
    );
    for t in 0..steps {
        // The recurrent term for the whole batch: rows h_{t-1} of every sample, added
        // onto the gates (GRU: onto the hidden-side projections, kept apart in `rest`,
        // whose rows are as far apart as the gates').
        if gru {
            for b in 0..batch {
                rest[b * r + t * w..][..w].copy_from_slice(bias_hh);
            }
        }
        if t > 0 {
            let prev = &output[(t - 1) * h..];
            let dst = if gru { &mut *rest } else { &mut *gates };
            let dst = &mut dst[t * w..];
            add_product(dst, steps * w, prev, steps * h, w_hh_t, batch, h, w);
        }
        vectorized(
            #[inline(always)]
            || {
                for b in 0..batch {
                    let g = &mut gates[(b * steps + t) * w..][..w];
                    let sample_rest = &mut rest[b * r..][..r];
                    let out = &mut output[b * steps * h..][..steps * h];
                    let (before, after) = out.split_at_mut(t * h);
                    let h_prev = if t > 0 {
                        Some(&before[(t - 1) * h..])
                    } else {
                        None
                    };
                    let h_t = &mut after[..h];
                    // Nonlinearities run over whole gate blocks, so the f32 path vectorises.
                    match s.cell {
                        Cell::Rnn => {
                            T::tanh_in_place(g);
                            h_t.copy_from_slice(g);
                        }
                        Cell::Lstm => {
                            let (input_forget, candidate_output) = g.split_at_mut(2 * h);
                            let (candidate, output_gate) = candidate_output.split_at_mut(h);
                            T::sigmoid_in_place(input_forget);
                            T::tanh_in_place(candidate);
                            T::sigmoid_in_place(output_gate);
                            let (i, fg) = input_forget.split_at(h);
                            let (before, current) = sample_rest.split_at_mut(t * h);
                            let current = &mut current[..h];
                            let (i, candidate) = (&i[..h], &candidate[..h]);
                            if t > 0 {
                                let (fg, c_prev) = (&fg[..h], &before[(t - 1) * h..][..h]);
                                for j in 0..h {
                                    current[j] = fg[j] * c_prev[j] + i[j] * candidate[j];
                                }
                            } else {
                                for j in 0..h {
                                    current[j] = i[j] * candidate[j];
                                }
                            }
                            h_t.copy_from_slice(current);
                            T::tanh_in_place(h_t);
                            for (hv, &o) in h_t.iter_mut().zip(output_gate.iter()) {
                                *hv *= o;
                            }
                        }
                        Cell::Gru => {
                            let p = &sample_rest[t * w..][..w];
                            add_assign(&mut g[..2 * h], &p[..2 * h]);
                            T::sigmoid_in_place(&mut g[..2 * h]);
                            for j in 0..h {
                                g[2 * h + j] += g[j] * p[2 * h + j];
                            }
                            T::tanh_in_place(&mut g[2 * h..]);
                            for j in 0..h {
                                let (z, n) = (g[h + j], g[2 * h + j]);
                                let prev = h_prev.map_or(T::ZERO, |hp| hp[j]);
                                h_t[j] = (T::ONE - z) * n + z * prev;
                            }
                        }
                    }
                }
            },
        );
    }
}

/// `dst += src`, element by element. Called inside [`vectorized`], so it must inline.
#[inline(always)]
fn add_assign<T: Float>(dst: &mut [T], src: &[T]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// Backpropagation through time. `grad_output` (every step's hidden-state gradient) is
/// used as scratch; `aux` is turned into gate gradients (the hidden-side ones of each
/// sample's first step are then zeroed). The four parameter gradients
/// are replaced; `grad_input`, if asked for, is replaced or accumulated.
///
/// The walk back through the steps runs the two halves of a large enough batch on two
/// threads; each weight gradient is then one GEMM over all samples and steps, split by
/// rows of the gradient, and the input gradient is split by samples. `scratch`
/// ([`RecurrentShape::scratch_len`] values) holds `Wₕₕ` packed for the per-step
/// product where `panels` applies (as in [`recurrent_forward`], with hidden columns).
///
/// # Panics
/// If a length does not match the geometry.
pub fn recurrent_backward<T: Float>(
    s: &RecurrentShape,
    grad_input: Option<(&mut [T], Accum)>,
    grad_weight_ih: &mut [T],
    grad_weight_hh: &mut [T],
    grad_bias_ih: &mut [T],
    grad_bias_hh: &mut [T],
    aux: &mut [T],
    scratch: &mut [T],
    input: &[T],
    output: &[T],
    weight_ih: &[T],
    weight_hh: &[T],
    grad_output: &mut [T],
    batch: usize,
) {
    let (steps, f, h, w) = (s.steps, s.features, s.hidden, s.width());
    let a = s.aux_len();
    check_len(
        "recurrent grad_output",
        grad_output.len(),
        batch * steps * h,
    );
    check_len("recurrent aux", aux.len(), batch * a);
    check_len("recurrent input", input.len(), batch * steps * f);
    check_len("recurrent output", output.len(), batch * steps * h);
    check_len("recurrent grad_weight_ih", grad_weight_ih.len(), w * f);
    check_len("recurrent grad_weight_hh", grad_weight_hh.len(), w * h);
    check_len("recurrent grad_bias_ih", grad_bias_ih.len(), w);
    check_len("recurrent grad_bias_hh", grad_bias_hh.len(), w);
    check_len("recurrent scratch", scratch.len(), s.scratch_len());
    let rows = largest_part(batch, s.flops_per_sample());
    let w_hh = if panels::applies::<T>(rows, w, h) {
        let packed = &mut scratch[f * w..];
        panels::pack(packed, weight_hh, w, h, false);
        Rhs::Packed(&*packed)
    } else {
        Rhs::Plain(MatRef::from_row_major_slice(weight_hh, w, h))
    };
    split_batch(
        batch,
        s.flops_per_sample(),
        (grad_output, steps * h),
        regions(s, &mut *aux, batch),
        &|first, grad_output: &mut [T], (gates, rest): (&mut [T], &mut [T])| {
            let count = grad_output.len() / (steps * h);
            let output = &output[first * steps * h..][..count * steps * h];
            through_time(s, gates, rest, grad_output, output, w_hh, count);
        },
    );
    let Both((gates, _), (rest, _)) = regions(s, aux, batch);
    let rows = batch * steps;
    // The hidden-side gate gradients: the gates' own for RNN and LSTM; GRU keeps them
    // apart in `rest`, whose rows are as far apart as the gates'.
    let gru = s.cell == Cell::Gru;
    // Row by row, inside `vectorized` (as the forward pass's bias rows): at SSE2's
    // width these sums were 3 % of the LSTM benchmark's samples.
    vectorized(
        #[inline(always)]
        || {
            grad_bias_ih.fill(T::ZERO);
            for row in gates.chunks_exact(w) {
                add_assign(grad_bias_ih, row);
            }
            if gru {
                grad_bias_hh.fill(T::ZERO);
                for row in rest.chunks_exact(w) {
                    add_assign(grad_bias_hh, row);
                }
            } else {
                grad_bias_hh.copy_from_slice(grad_bias_ih);
            }
        },
    );
    // Every sample's gate gradient rows follow each other, as do its inputs and hidden
    // states: each weight gradient is one GEMM over all samples and steps.
    let all_gates = MatRef::from_row_major_slice(gates, rows, w);
    for_row_blocks(
        grad_weight_ih,
        f,
        2.0 * (rows * f) as f64,
        &|first, dst: &mut [T]| {
            let dst = MatMut::from_row_major_slice_mut(dst, dst.len() / f, f);
            let g = all_gates.submatrix(0, first, rows, dst.nrows()).transpose();
            let x = MatRef::from_row_major_slice(input, rows, f);
            matmul(dst, Accum::Replace, g, x, T::ONE, Par::Seq);
        },
    );
    if let Some((grad_input, accum)) = grad_input {
        check_len("recurrent grad_input", grad_input.len(), batch * steps * f);
        let w_ih = MatRef::from_row_major_slice(weight_ih, w, f);
        for_row_blocks(
            grad_input,
            steps * f,
            2.0 * (steps * w * f) as f64,
            &|first, grad_input: &mut [T]| {
                let n = grad_input.len() / f;
                let dst = MatMut::from_row_major_slice_mut(grad_input, n, f);
                let g = all_gates.subrows(first * steps, n);
                matmul(dst, accum, g, w_ih, T::ONE, Par::Seq);
            },
        );
    }
    if steps == 1 {
        grad_weight_hh.fill(T::ZERO);
        return;
    }
    // Step t's hidden-side gates pair with h_{t-1}: the hidden-side rows from the
    // second on against the hidden states up to the last but one, as one product. That
    // pairs each sample's first step with the previous sample's last hidden state, so
    // those rows (which no h_{-1} multiplies: it is zero) are zeroed first. It comes
    // last: for RNN and LSTM they are rows of the gate gradients, which the bias, `W_ih`
    // and input gradients above read whole.
    let hidden_side = if gru { rest } else { gates };
    for first_step in hidden_side.chunks_exact_mut(steps * w).skip(1) {
        first_step[..w].fill(T::ZERO);
    }
    let hidden_side = MatRef::from_row_major_slice(&hidden_side[w..], rows - 1, w);
    let prev = MatRef::from_row_major_slice(&output[..(rows - 1) * h], rows - 1, h);
    for_row_blocks(
        grad_weight_hh,
        h,
        2.0 * ((rows - 1) * h) as f64,
        &|first, dst: &mut [T]| {
            let dst = MatMut::from_row_major_slice_mut(dst, dst.len() / h, h);
            let g = hidden_side
                .submatrix(0, first, rows - 1, dst.nrows())
                .transpose();
            matmul(dst, Accum::Replace, g, prev, T::ONE, Par::Seq);
        },
    );
}

/// The two regions of a layer's `aux` (`batch` samples of [`RecurrentShape::aux_len`]
/// values), each with its values a sample, as [`split_batch`] takes them: the gates of
/// every step of every sample (`batch · steps` rows of
/// `width()`), then the rest of each sample's values in turn ([`rest_len`]: LSTM's cell
/// states, carry and `tanh(c_t)` row; GRU's hidden-side projections). With the gate
/// rows of all samples adjacent, the input projections and the weight gradients are
/// one GEMM each over every sample and step instead of one a sample, whose inner
/// dimension was only `steps` (timings in docs/design.md, "Recurrent layers").
fn regions<'a, T>(
    s: &RecurrentShape,
    aux: &'a mut [T],
    batch: usize,
) -> Both<PerSample<'a, T>, PerSample<'a, T>> {
    let (gates, rest) = aux.split_at_mut(batch * s.steps * s.width());
    Both((gates, s.steps * s.width()), (rest, rest_len(s)))
}

/// Values a sample keeps in the second of the [`regions`].
fn rest_len(s: &RecurrentShape) -> usize {
    s.aux_len() - s.steps * s.width()
}

/// `dst[b, t] = src[b, steps − 1 − t]` for every sample `b` of rows of `width` values.
fn reverse_steps<T: Float>(dst: &mut [T], src: &[T], steps: usize, width: usize) {
    for (d, s) in dst
        .chunks_exact_mut(steps * width)
        .zip(src.chunks_exact(steps * width))
    {
        for (row, from) in d.chunks_exact_mut(width).zip(s.chunks_exact(width).rev()) {
            row.copy_from_slice(from);
        }
    }
}

/// The regions of a bidirectional layer's `aux` (`batch` samples of
/// [`RecurrentShape::bidirectional_aux_len`]), each batch-major on its own.
struct Directions<'a, T> {
    aux_forward: &'a mut [T],
    aux_reverse: &'a mut [T],
    out_forward: &'a mut [T],
    /// The reverse direction's hidden states, in its own (reversed) step order.
    out_reverse: &'a mut [T],
    /// The input with its steps reversed: what the reverse direction reads.
    input_reverse: &'a mut [T],
    grad_forward: &'a mut [T],
    grad_reverse: &'a mut [T],
    grad_input_reverse: &'a mut [T],
}

impl<'a, T> Directions<'a, T> {
    fn split(s: &RecurrentShape, aux: &'a mut [T], batch: usize) -> Self {
        let (a, hs, fs) = (
            batch * s.aux_len(),
            batch * s.steps * s.hidden,
            batch * s.steps * s.features,
        );
        let (aux_forward, rest) = aux.split_at_mut(a);
        let (aux_reverse, rest) = rest.split_at_mut(a);
        let (out_forward, rest) = rest.split_at_mut(hs);
        let (out_reverse, rest) = rest.split_at_mut(hs);
        let (input_reverse, rest) = rest.split_at_mut(fs);
        let (grad_forward, rest) = rest.split_at_mut(hs);
        let (grad_reverse, grad_input_reverse) = rest.split_at_mut(hs);
        Directions {
            aux_forward,
            aux_reverse,
            out_forward,
            out_reverse,
            input_reverse,
            grad_forward,
            grad_reverse,
            grad_input_reverse,
        }
    }
}

/// One direction's `[weight_ih, weight_hh, bias_ih, bias_hh]` from its
/// [`RecurrentShape::params_len`] values.
fn direction_params<'a, T>(s: &RecurrentShape, params: &'a [T]) -> [&'a [T]; 4] {
    let (w, f, h) = (s.width(), s.features, s.hidden);
    let (weight_ih, rest) = params.split_at(w * f);
    let (weight_hh, rest) = rest.split_at(w * h);
    let (bias_ih, bias_hh) = rest.split_at(w);
    [weight_ih, weight_hh, bias_ih, bias_hh]
}

/// A bidirectional recurrent layer (PyTorch's `bidirectional=True`): the forward
/// direction reads the steps in order, the reverse direction from the last step to the
/// first, and step `t` of the output is `[h_t forward, h_t reverse]`, `2 · hidden`
/// values. `params` holds both directions' tensors in PyTorch's order (`weight_ih_l0`,
/// `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, then the same with `_reverse`), `2 ·`
/// [`RecurrentShape::params_len`] values. Each direction runs
/// [`recurrent_forward`] on the steps it reads in its order; `aux` holds what both
/// directions' backward passes need.
///
/// # Panics
/// If a length does not match the geometry.
pub fn bidirectional_forward<T: Float>(
    s: &RecurrentShape,
    output: &mut [T],
    aux: &mut [T],
    scratch: &mut [T],
    input: &[T],
    params: &[T],
    batch: usize,
) {
    let (steps, f, h) = (s.steps, s.features, s.hidden);
    check_len("bidirectional input", input.len(), batch * steps * f);
    check_len("bidirectional output", output.len(), batch * steps * 2 * h);
    check_len(
        "bidirectional aux",
        aux.len(),
        batch * s.bidirectional_aux_len(),
    );
    check_len("bidirectional params", params.len(), 2 * s.params_len());
    let d = Directions::split(s, aux, batch);
    let (forward, reverse) = params.split_at(s.params_len());
    let [wi, wh, bi, bh] = direction_params(s, forward);
    recurrent_forward(
        s,
        d.out_forward,
        d.aux_forward,
        scratch,
        input,
        wi,
        wh,
        bi,
        bh,
        batch,
    );
    reverse_steps(d.input_reverse, input, steps, f);
    let [wi, wh, bi, bh] = direction_params(s, reverse);
    let (x, out) = (&*d.input_reverse, &mut *d.out_reverse);
    recurrent_forward(s, out, d.aux_reverse, scratch, x, wi, wh, bi, bh, batch);
    for ((y, of), or) in output
        .chunks_exact_mut(steps * 2 * h)
        .zip(d.out_forward.chunks_exact(steps * h))
        .zip(d.out_reverse.chunks_exact(steps * h))
    {
        for ((row, hf), hr) in y
            .chunks_exact_mut(2 * h)
            .zip(of.chunks_exact(h))
            .zip(or.chunks_exact(h).rev())
        {
            row[..h].copy_from_slice(hf);
            row[h..].copy_from_slice(hr);
        }
    }
}

/// Backward of [`bidirectional_forward`]: each direction's backpropagation through
/// time ([`recurrent_backward`]) on its half of `grad_output`, in its step order. The
/// `2 ·` [`RecurrentShape::params_len`] gradients in `grads` are replaced;
/// `grad_input`, if asked for, is replaced or accumulated with the sum of both
/// directions' input gradients.
///
/// # Panics
/// If a length does not match the geometry.
pub fn bidirectional_backward<T: Float>(
    s: &RecurrentShape,
    grad_input: Option<(&mut [T], Accum)>,
    grads: &mut [T],
    aux: &mut [T],
    scratch: &mut [T],
    input: &[T],
    params: &[T],
    grad_output: &[T],
    batch: usize,
) {
    let (steps, f, h, w) = (s.steps, s.features, s.hidden, s.width());
    check_len(
        "bidirectional grad_output",
        grad_output.len(),
        batch * steps * 2 * h,
    );
    check_len("bidirectional input", input.len(), batch * steps * f);
    check_len(
        "bidirectional aux",
        aux.len(),
        batch * s.bidirectional_aux_len(),
    );
    check_len("bidirectional params", params.len(), 2 * s.params_len());
    check_len("bidirectional grads", grads.len(), 2 * s.params_len());
    let d = Directions::split(s, aux, batch);
    for ((g, gf), gr) in grad_output
        .chunks_exact(steps * 2 * h)
        .zip(d.grad_forward.chunks_exact_mut(steps * h))
        .zip(d.grad_reverse.chunks_exact_mut(steps * h))
    {
        for ((row, gf), gr) in g
            .chunks_exact(2 * h)
            .zip(gf.chunks_exact_mut(h))
            .zip(gr.chunks_exact_mut(h).rev())
        {
            gf.copy_from_slice(&row[..h]);
            gr.copy_from_slice(&row[h..]);
        }
    }
    let (forward, reverse) = params.split_at(s.params_len());
    let (grads_forward, grads_reverse) = grads.split_at_mut(s.params_len());
    fn split<T>(grads: &mut [T], ih: usize, hh: usize) -> [&mut [T]; 4] {
        let (weight_ih, rest) = grads.split_at_mut(ih);
        let (weight_hh, rest) = rest.split_at_mut(hh);
        let (bias_ih, bias_hh) = rest.split_at_mut(rest.len() / 2);
        [weight_ih, weight_hh, bias_ih, bias_hh]
    }
    let mut grad_input = grad_input;
    let [wi, wh, _, _] = direction_params(s, forward);
    let [gwi, gwh, gbi, gbh] = split(grads_forward, w * f, w * h);
    let (out, aux) = (&*d.out_forward, &mut *d.aux_forward);
    let dx = grad_input.as_mut().map(|(g, accum)| (&mut **g, *accum));
    let dy = &mut *d.grad_forward;
    recurrent_backward(
        s, dx, gwi, gwh, gbi, gbh, aux, scratch, input, out, wi, wh, dy, batch,
    );
    let [wi, wh, _, _] = direction_params(s, reverse);
    let [gwi, gwh, gbi, gbh] = split(grads_reverse, w * f, w * h);
    let (out, aux, x) = (&*d.out_reverse, &mut *d.aux_reverse, &*d.input_reverse);
    let dx = grad_input
        .is_some()
        .then_some((&mut *d.grad_input_reverse, Accum::Replace));
    let dy = &mut *d.grad_reverse;
    recurrent_backward(
        s, dx, gwi, gwh, gbi, gbh, aux, scratch, x, out, wi, wh, dy, batch,
    );
    if let Some((grad_input, _)) = grad_input {
        // The reverse direction's input gradient, back in the input's step order.
        for (g, r) in grad_input
            .chunks_exact_mut(steps * f)
            .zip(d.grad_input_reverse.chunks_exact(steps * f))
        {
            for (row, from) in g.chunks_exact_mut(f).zip(r.chunks_exact(f).rev()) {
                add_assign(row, from);
            }
        }
    }
}

/// The walk back through the steps for `batch` consecutive samples: turns their gate
/// activations (`gates`, `rest`: their parts of the two [`regions`]) into gate
/// gradients and carries the hidden-state gradient back.
fn through_time<T: Float>(
    s: &RecurrentShape,
    gates: &mut [T],
    rest: &mut [T],
    grad_output: &mut [T],
    output: &[T],
    w_hh: Rhs<'_, T>,
    batch: usize,
) {
    let (steps, h, w) = (s.steps, s.hidden, s.width());
    let r = rest_len(s);
    if s.cell == Cell::Lstm {
        for sample_rest in rest.chunks_exact_mut(r) {
            sample_rest[steps * h..][..h].fill(T::ZERO);
        }
    }
    for t in (0..steps).rev() {
        vectorized(
            #[inline(always)]
            || {
                for b in 0..batch {
                    let g = &mut gates[(b * steps + t) * w..][..w];
                    let sample_rest = &mut rest[b * r..][..r];
                    let go = &mut grad_output[b * steps * h..][..steps * h];
                    let (go_before, go_rest) = go.split_at_mut(t * h);
                    let dh = &go_rest[..h];
                    let out = &output[b * steps * h..][..steps * h];
                    match s.cell {
                        Cell::Rnn => {
                            for ((g, &d), &hv) in g.iter_mut().zip(dh).zip(&out[t * h..][..h]) {
                                *g = d * (T::ONE - hv * hv);
                            }
                        }
                        Cell::Lstm => {
                            let (cells, carry_tanh) = sample_rest.split_at_mut(steps * h);
                            let (carry, tanh_c) = carry_tanh.split_at_mut(h);
                            // tanh(c_t) for the row at once, so the f32 path vectorises.
                            tanh_c.copy_from_slice(&cells[t * h..][..h]);
                            T::tanh_in_place(tanh_c);
                            let c_prev = (t > 0).then(|| &cells[(t - 1) * h..][..h]);
                            lstm_gate_grads(g, dh, tanh_c, c_prev, carry);
                        }
                        Cell::Gru => {
                            let p = &mut sample_rest[t * w..][..w];
                            let prev = (t > 0).then(|| {
                                (&out[(t - 1) * h..][..h], &mut go_before[(t - 1) * h..][..h])
                            });
                            gru_gate_grads(g, p, dh, prev);
                        }
                    }
                }
            },
        );
        if t > 0 {
            // dL/dh_{t-1} += (hidden-side gate gradients) · W_hh, for the whole batch.
            let hidden_side = if s.cell == Cell::Gru { &*rest } else { &*gates };
            let dst = &mut grad_output[(t - 1) * h..];
            let g = &hidden_side[t * w..];
            add_product(dst, steps * h, g, steps * w, w_hh, batch, w, h);
        }
    }
}

/// One LSTM step's gate gradients for one sample, in place of the gate activations
/// `g` (`i, f, g, o`, `h` values each), from the hidden state's gradient `dh`,
/// `tanh(c_t)`, the previous cell state (`None` at the first step, where it is zero)
/// and the cell gradient carried from the step after (`carry`, then the one for the
/// step before). Every slice is cut to `h` first, so the loop has no bounds checks
/// and the f32 path vectorises: indexed into whole rows it compiled to scalar
/// `vmulss`, a ninth of the LSTM benchmark's samples.
#[inline(always)]
fn lstm_gate_grads<T: Float>(
    g: &mut [T],
    dh: &[T],
    tanh_c: &[T],
    c_prev: Option<&[T]>,
    carry: &mut [T],
) {
    let h = dh.len();
    let (gi, g) = g.split_at_mut(h);
    let (gf, g) = g.split_at_mut(h);
    let (gg, go) = g.split_at_mut(h);
    let (go, tanh_c, carry) = (&mut go[..h], &tanh_c[..h], &mut carry[..h]);
    let mut step = |j: usize, c_prev: T| {
        let (i, fg, gv, o) = (gi[j], gf[j], gg[j], go[j]);
        let tc = tanh_c[j];
        let d_o = dh[j] * tc;
        let dc = dh[j] * o * (T::ONE - tc * tc) + carry[j];
        carry[j] = dc * fg;
        gi[j] = dc * gv * i * (T::ONE - i);
        gf[j] = dc * c_prev * fg * (T::ONE - fg);
        gg[j] = dc * i * (T::ONE - gv * gv);
        go[j] = d_o * o * (T::ONE - o);
    };
    match c_prev {
        Some(c_prev) => {
            for (j, &c) in c_prev[..h].iter().enumerate() {
                step(j, c);
            }
        }
        None => {
            for j in 0..h {
                step(j, T::ZERO);
            }
        }
    }
}

/// One GRU step's gate gradients for one sample: `g` (`r, z, n` activations) becomes
/// the gradients of the gates' pre-activations, `p` (the hidden-side projections)
/// the hidden side's, and with `prev` (the previous hidden state and the previous
/// step's output gradient; `None` at the first step, where that state is zero) `dh · z`
/// goes onto that gradient. Slices cut to `h` as in [`lstm_gate_grads`].
#[inline(always)]
fn gru_gate_grads<T: Float>(g: &mut [T], p: &mut [T], dh: &[T], prev: Option<(&[T], &mut [T])>) {
    let h = dh.len();
    let (gr, g) = g.split_at_mut(h);
    let (gz, gn) = g.split_at_mut(h);
    let gn = &mut gn[..h];
    let (pr, p) = p.split_at_mut(h);
    let (pz, pn) = p.split_at_mut(h);
    let (pr, pz, pn) = (&mut pr[..h], &mut pz[..h], &mut pn[..h]);
    let mut step = |j: usize, prev: T| {
        let (r, z, n) = (gr[j], gz[j], gn[j]);
        let dn = dh[j] * (T::ONE - z);
        let dz = dh[j] * (prev - n);
        let dan = dn * (T::ONE - n * n);
        let dar = dan * pn[j] * r * (T::ONE - r);
        let daz = dz * z * (T::ONE - z);
        gr[j] = dar;
        gz[j] = daz;
        gn[j] = dan;
        pr[j] = dar;
        pz[j] = daz;
        pn[j] = dan * r;
        z
    };
    match prev {
        Some((prev, go_prev)) => {
            let (prev, go_prev) = (&prev[..h], &mut go_prev[..h]);
            for j in 0..h {
                let z = step(j, prev[j]);
                go_prev[j] += dh[j] * z;
            }
        }
        None => {
            for j in 0..h {
                step(j, T::ZERO);
            }
        }
    }
}

/// `[steps, width]` to `[width]`: the last step of each sample.
///
/// # Panics
/// If the lengths do not match.
pub fn last_step_forward<T: Float>(
    output: &mut [T],
    input: &[T],
    steps: usize,
    width: usize,
    batch: usize,
) {
    check_len("last_step input", input.len(), batch * steps * width);
    check_len("last_step output", output.len(), batch * width);
    for (y, x) in output
        .chunks_exact_mut(width)
        .zip(input.chunks_exact(steps * width))
    {
        y.copy_from_slice(&x[(steps - 1) * width..]);
    }
}

/// Gradient of [`last_step_forward`]: zero for every step but the last.
///
/// # Panics
/// If the lengths do not match.
pub fn last_step_backward<T: Float>(
    grad_input: &mut [T],
    accum: Accum,
    grad_output: &[T],
    steps: usize,
    width: usize,
    batch: usize,
) {
    check_len(
        "last_step grad_input",
        grad_input.len(),
        batch * steps * width,
    );
    check_len("last_step grad_output", grad_output.len(), batch * width);
    for (gi, g) in grad_input
        .chunks_exact_mut(steps * width)
        .zip(grad_output.chunks_exact(width))
    {
        if accum == Accum::Replace {
            gi[..(steps - 1) * width].fill(T::ZERO);
        }
        for (d, &v) in gi[(steps - 1) * width..].iter_mut().zip(g) {
            store(d, v, accum);
        }
    }
}

/// `[rows, cols]` to `[cols, rows]` for every sample (PyTorch's `x.transpose(1, 2)` on
/// a batch-first tensor): between a sequence's `[steps, features]` and a 1-d
/// convolution's `[channels, length]`.
///
/// # Panics
/// If the lengths do not match.
pub fn transpose_forward<T: Float>(
    output: &mut [T],
    input: &[T],
    rows: usize,
    cols: usize,
    batch: usize,
) {
    check_len("transpose input", input.len(), batch * rows * cols);
    check_len("transpose output", output.len(), batch * rows * cols);
    for (y, x) in output
        .chunks_exact_mut(rows * cols)
        .zip(input.chunks_exact(rows * cols))
    {
        transpose(y, x, rows, cols);
    }
}

/// Backward of [`transpose_forward`] over `[rows, cols]` samples: `grad_output`
/// (`[cols, rows]`) transposed back, replacing or accumulating into `grad_input`.
///
/// # Panics
/// If the lengths do not match.
pub fn transpose_backward<T: Float>(
    grad_input: &mut [T],
    accum: Accum,
    grad_output: &[T],
    rows: usize,
    cols: usize,
    batch: usize,
) {
    check_len(
        "transpose grad_input",
        grad_input.len(),
        batch * rows * cols,
    );
    check_len(
        "transpose grad_output",
        grad_output.len(),
        batch * rows * cols,
    );
    for (gi, g) in grad_input
        .chunks_exact_mut(rows * cols)
        .zip(grad_output.chunks_exact(rows * cols))
    {
        if accum == Accum::Replace {
            transpose(gi, g, cols, rows);
        } else {
            let mut gi = MatMut::from_row_major_slice_mut(gi, rows, cols);
            let g = MatRef::from_row_major_slice(g, cols, rows).transpose();
            gi += g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn check(cell: Cell, steps: usize) {
        let s = RecurrentShape {
            cell,
            steps,
            features: 3,
            hidden: 4,
        };
        let batch = 2;
        let (w, f, h) = (s.width(), s.features, s.hidden);
        let x = values(batch * steps * f, 31);
        let w_ih = values(w * f, 32);
        let w_hh = values(w * h, 33);
        let b_ih = values(w, 34);
        let b_hh = values(w, 35);
        let c = values(batch * steps * h, 36);
        let run = |x: &[f64], w_ih: &[f64], w_hh: &[f64], b_ih: &[f64], b_hh: &[f64]| {
            forward(&s, batch, x, [w_ih, w_hh, b_ih, b_hh])
        };
        let (y, mut aux) = run(&x, &w_ih, &w_hh, &b_ih, &b_hh);
        let mut gx = vec![0.0; x.len()];
        let (mut gwi, mut gwh, mut gbi, mut gbh) = (
            vec![0.0; w_ih.len()],
            vec![0.0; w_hh.len()],
            vec![0.0; w],
            vec![0.0; w],
        );
        let mut go = c.clone();
        recurrent_backward(
            &s,
            Some((&mut gx, Accum::Replace)),
            &mut gwi,
            &mut gwh,
            &mut gbi,
            &mut gbh,
            &mut aux,
            &mut vec![0.0; s.scratch_len()],
            &x,
            &y,
            &w_ih,
            &w_hh,
            &mut go,
            batch,
        );
        let loss = |x: &[f64], wi: &[f64], wh: &[f64], bi: &[f64], bh: &[f64]| {
            dot(&c, &run(x, wi, wh, bi, bh).0)
        };
        let tol = 1e-7;
        assert_close(
            &gx,
            &numeric_grad(&x, 1e-6, |v| loss(v, &w_ih, &w_hh, &b_ih, &b_hh)),
            tol,
        );
        assert_close(
            &gwi,
            &numeric_grad(&w_ih, 1e-6, |v| loss(&x, v, &w_hh, &b_ih, &b_hh)),
            tol,
        );
        assert_close(
            &gwh,
            &numeric_grad(&w_hh, 1e-6, |v| loss(&x, &w_ih, v, &b_ih, &b_hh)),
            tol,
        );
        assert_close(
            &gbi,
            &numeric_grad(&b_ih, 1e-6, |v| loss(&x, &w_ih, &w_hh, v, &b_hh)),
            tol,
        );
        assert_close(
            &gbh,
            &numeric_grad(&b_hh, 1e-6, |v| loss(&x, &w_ih, &w_hh, &b_ih, v)),
            tol,
        );
    }

    #[test]
    fn every_cell_matches_finite_differences() {
        for cell in [Cell::Rnn, Cell::Lstm, Cell::Gru] {
            // 32 steps of the batch of 2: enough rows for the transposed weights.
            for steps in [1, 2, 5, 32] {
                check(cell, steps);
            }
        }
    }

    /// The forward pass over `batch` samples: the output and the auxiliary node.
    fn forward<T: Float>(
        s: &RecurrentShape,
        batch: usize,
        x: &[T],
        params: [&[T]; 4],
    ) -> (Vec<T>, Vec<T>) {
        let [w_ih, w_hh, b_ih, b_hh] = params;
        let mut y = vec![T::ZERO; batch * s.steps * s.hidden];
        let mut aux = vec![T::ZERO; batch * s.aux_len()];
        let mut scratch = vec![T::from_f64(f64::NAN); s.scratch_len()];
        recurrent_forward(
            s,
            &mut y,
            &mut aux,
            &mut scratch,
            x,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            batch,
        );
        (y, aux)
    }

    /// Forward and backward over `batch` samples with output gradient `c`: the output,
    /// then the gradients of the input, both weights and both biases.
    #[allow(clippy::type_complexity)]
    fn passes<T: Float>(
        s: &RecurrentShape,
        batch: usize,
        x: &[T],
        params: [&[T]; 4],
        c: &[T],
    ) -> (Vec<T>, [Vec<T>; 5]) {
        let [w_ih, w_hh, b_ih, b_hh] = params;
        let (y, mut aux) = forward(s, batch, x, params);
        let nan = T::from_f64(f64::NAN);
        let mut grads = [x, w_ih, w_hh, b_ih, b_hh].map(|v| vec![nan; v.len()]);
        let [gx, gwi, gwh, gbi, gbh] = &mut grads;
        let mut go = c.to_vec();
        recurrent_backward(
            s,
            Some((gx, Accum::Replace)),
            gwi,
            gwh,
            gbi,
            gbh,
            &mut aux,
            &mut vec![nan; s.scratch_len()],
            x,
            &y,
            w_ih,
            w_hh,
            &mut go,
            batch,
        );
        (y, grads)
    }

    /// `[weight_ih, weight_hh, bias_ih, bias_hh]` for `s`, drawn from seeds `seed` to
    /// `seed + 3`.
    fn random_params(s: &RecurrentShape, seed: u64) -> [Vec<f64>; 4] {
        let (w, f, h) = (s.width(), s.features, s.hidden);
        [
            values(w * f, seed),
            values(w * h, seed + 1),
            values(w, seed + 2),
            values(w, seed + 3),
        ]
    }

    /// f32 against f64 on shapes where the per-step products take the packed kernel
    /// (on a processor whose widest vectors are AVX2; faer's product elsewhere): one
    /// thread and two, every row remainder of its 6-row tiles, and a hidden size off
    /// the 16-column panels, which keeps faer's product.
    #[test]
    fn f32_passes_match_f64_where_the_packed_product_runs() {
        for cell in [Cell::Rnn, Cell::Lstm, Cell::Gru] {
            for (hidden, batch) in [(16, 7), (32, 4), (32, 100), (48, 11), (16, 3), (24, 9)] {
                let s = RecurrentShape {
                    cell,
                    steps: 6,
                    features: 5,
                    hidden,
                };
                let (f, h, steps) = (s.features, s.hidden, s.steps);
                let x = values(batch * steps * f, 51);
                let params = random_params(&s, 52);
                let c = values(batch * steps * h, 56);
                let params64 = [0, 1, 2, 3].map(|k| params[k].as_slice());
                let (y, grads) = passes(&s, batch, &x, params64, &c);
                let (x32, c32) = (narrow(&x), narrow(&c));
                let params32 = params.each_ref().map(|p| narrow(p));
                let params32 = [0, 1, 2, 3].map(|k| params32[k].as_slice());
                let (y32, grads32) = passes(&s, batch, &x32, params32, &c32);
                assert_close(&widen(&y32), &y, 1e-5);
                for (g32, g) in grads32.iter().zip(&grads) {
                    assert_close(&widen(g32), g, 1e-3);
                }
            }
        }
    }

    #[test]
    fn a_batch_split_across_threads_equals_its_samples_one_by_one() {
        for cell in [Cell::Rnn, Cell::Lstm, Cell::Gru] {
            let s = RecurrentShape {
                cell,
                steps: 5,
                features: 8,
                hidden: 32,
            };
            // Large enough that both passes take the two-thread path.
            let batch = 400;
            assert!(s.flops_per_sample() * batch as f64 >= super::super::PARALLEL_MIN_FLOPS);
            let (f, h, steps) = (s.features, s.hidden, s.steps);
            let x = values(batch * steps * f, 41);
            let params = random_params(&s, 42);
            let params = [0, 1, 2, 3].map(|k| params[k].as_slice());
            let c = values(batch * steps * h, 46);
            let (y, grads) = passes(&s, batch, &x, params, &c);
            let mut y_each = Vec::new();
            let mut gx_each = Vec::new();
            let mut sums = [1, 2, 3, 4].map(|k| vec![0.0; grads[k].len()]);
            for b in 0..batch {
                let (yb, gb) = passes(
                    &s,
                    1,
                    &x[b * steps * f..][..steps * f],
                    params,
                    &c[b * steps * h..][..steps * h],
                );
                y_each.extend(yb);
                gx_each.extend_from_slice(&gb[0]);
                for (sum, g) in sums.iter_mut().zip(&gb[1..]) {
                    for (t, &v) in sum.iter_mut().zip(g) {
                        *t += v;
                    }
                }
            }
            assert_close(&y, &y_each, 1e-12);
            assert_close(&grads[0], &gx_each, 1e-12);
            for (g, sum) in grads[1..].iter().zip(&sums) {
                assert_close(g, sum, 1e-10);
            }
        }
    }

    #[test]
    fn last_step_picks_and_routes_the_last_row() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut y = [0.0; 2];
        last_step_forward(&mut y, &x, 3, 2, 1);
        assert_eq!(y, [5.0, 6.0]);
        let mut gx = [9.0; 6];
        last_step_backward(&mut gx, Accum::Replace, &[1.0, 2.0], 3, 2, 1);
        assert_eq!(gx, [0.0, 0.0, 0.0, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn transpose_swaps_each_samples_axes_and_routes_gradients_back() {
        // Two samples of [2, 3].
        let x = [
            1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0,
        ];
        let mut y = [0.0; 12];
        transpose_forward(&mut y, &x, 2, 3, 2);
        let expected = [
            1.0, 4.0, 2.0, 5.0, 3.0, 6.0, 7.0, 10.0, 8.0, 11.0, 9.0, 12.0,
        ];
        assert_eq!(y, expected);
        let mut gx = [0.5; 12];
        transpose_backward(&mut gx, Accum::Replace, &expected, 2, 3, 2);
        assert_eq!(gx, x);
        transpose_backward(&mut gx, Accum::Add, &expected, 2, 3, 2);
        assert_eq!(gx, x.map(|v| 2.0 * v));
    }

    #[test]
    fn bidirectional_equals_a_forward_and_a_reversed_pass() {
        let s = RecurrentShape {
            cell: Cell::Lstm,
            steps: 4,
            features: 3,
            hidden: 2,
        };
        let batch = 3;
        let (steps, f, h) = (s.steps, s.features, s.hidden);
        let values = |n: usize, seed: usize| -> Vec<f64> {
            (0..n)
                .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f64 / 500.0 - 1.0) * 0.7)
                .collect()
        };
        let params = values(2 * s.params_len(), 1);
        let x = values(batch * steps * f, 2);
        let mut y = vec![0.0; batch * steps * 2 * h];
        let mut aux = vec![0.0; batch * s.bidirectional_aux_len()];
        let mut scratch = vec![0.0; s.scratch_len()];
        bidirectional_forward(&s, &mut y, &mut aux, &mut scratch, &x, &params, batch);
        // Each direction on its own: the reverse one on the reversed steps.
        let one = |params: &[f64], x: &[f64]| {
            let [wi, wh, bi, bh] = direction_params(&s, params);
            let mut y = vec![0.0; batch * steps * h];
            let mut aux = vec![0.0; batch * s.aux_len()];
            let mut scratch = vec![0.0; s.scratch_len()];
            recurrent_forward(&s, &mut y, &mut aux, &mut scratch, x, wi, wh, bi, bh, batch);
            y
        };
        let mut reversed = vec![0.0; x.len()];
        reverse_steps(&mut reversed, &x, steps, f);
        let forward = one(&params[..s.params_len()], &x);
        let reverse = one(&params[s.params_len()..], &reversed);
        for b in 0..batch {
            for t in 0..steps {
                let row = &y[(b * steps + t) * 2 * h..][..2 * h];
                assert_eq!(&row[..h], &forward[(b * steps + t) * h..][..h]);
                assert_eq!(&row[h..], &reverse[(b * steps + steps - 1 - t) * h..][..h]);
            }
        }
    }
}
