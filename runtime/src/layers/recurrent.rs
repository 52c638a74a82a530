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
//! the last. The input projections of all steps are one GEMM per sample; each step
//! then adds `W_hh h_{t-1}` for the whole batch in one GEMM over strided rows.
//! Backward walks the steps in reverse, turning the stored gate activations into gate
//! gradients in place and adding `W_hhᵀ`'s share onto the previous step's output
//! gradient, then takes the weight gradients as GEMMs over all steps.
//!
//! # Shapes
//! `input`: `batch x [steps, features]`; `output`: `batch x [steps, hidden]`;
//! `weight_ih`: `[G·hidden, features]`, `weight_hh`: `[G·hidden, hidden]`, biases
//! `[G·hidden]` with `G` = 1 (RNN), 4 (LSTM), 3 (GRU); `aux`: [`RecurrentShape::aux_len`]
//! per sample.
//!
//! # Initialisation
//! PyTorch's: every weight and bias ~ `U(-1/√hidden, 1/√hidden)`.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use super::{check_len, store};
use crate::Float;

/// Which recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// Elman RNN with tanh.
    Rnn,
    /// Long short-term memory.
    Lstm,
    /// Gated recurrent unit.
    Gru,
}

/// The geometry of a recurrent layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecurrentShape {
    /// The cell.
    pub cell: Cell,
    /// Time steps per sample.
    pub steps: usize,
    /// Input features per step.
    pub features: usize,
    /// Hidden units.
    pub hidden: usize,
}

impl RecurrentShape {
    /// Gates per hidden unit.
    pub const fn gates(&self) -> usize {
        match self.cell {
            Cell::Rnn => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    /// Width of the gate rows, `G · hidden`.
    pub const fn width(&self) -> usize {
        self.gates() * self.hidden
    }

    /// Per-sample auxiliary values: the gates of every step, then the cell states and a
    /// carry (LSTM) or the hidden-side projections (GRU).
    pub const fn aux_len(&self) -> usize {
        let gates = self.steps * self.width();
        match self.cell {
            Cell::Rnn => gates,
            Cell::Lstm => gates + (self.steps + 1) * self.hidden,
            Cell::Gru => 2 * gates,
        }
    }
}

/// Rows `t` of every sample, `rows x cols` with row stride `stride`, starting at `offset`.
fn rows_ref<T: Float>(
    data: &[T],
    offset: usize,
    rows: usize,
    cols: usize,
    stride: usize,
) -> MatRef<'_, T> {
    MatRef::from_row_major_slice_with_stride(
        &data[offset..offset + (rows - 1) * stride + cols],
        rows,
        cols,
        stride,
    )
}

/// The mutable twin of [`rows_ref`]. faer 0.24's `from_row_major_slice_with_stride_mut`
/// swaps the strides (it builds a column-major view), so the row-major view is made as
/// the transpose of a column-major one, as faer's immutable constructor does.
fn rows_mut<T: Float>(
    data: &mut [T],
    offset: usize,
    rows: usize,
    cols: usize,
    stride: usize,
) -> MatMut<'_, T> {
    let slice = &mut data[offset..offset + (rows - 1) * stride + cols];
    MatMut::from_column_major_slice_with_stride_mut(slice, cols, rows, stride).transpose_mut()
}

/// Forward pass over every step; `aux` keeps what backward needs.
///
/// # Panics
/// If a length does not match the geometry.
pub fn recurrent_forward<T: Float>(
    s: &RecurrentShape,
    output: &mut [T],
    aux: &mut [T],
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
    let w_ih = MatRef::from_row_major_slice(weight_ih, w, f);
    let w_hh = MatRef::from_row_major_slice(weight_hh, w, h);
    let gru = s.cell == Cell::Gru;
    // Input projections of all steps, one GEMM per sample, plus the biases that add.
    for b in 0..batch {
        let x = MatRef::from_row_major_slice(&input[b * steps * f..][..steps * f], steps, f);
        let gates = MatMut::from_row_major_slice_mut(&mut aux[b * a..][..steps * w], steps, w);
        matmul(gates, Accum::Replace, x, w_ih.transpose(), T::ONE, Par::Seq);
        for row in aux[b * a..][..steps * w].chunks_exact_mut(w) {
            for (j, g) in row.iter_mut().enumerate() {
                *g += bias_ih[j] + if gru { T::ZERO } else { bias_hh[j] };
            }
        }
    }
    let hh_offset = steps * w; // GRU: hidden-side projections
    let c_offset = steps * w; // LSTM: cell states c_0 .. c_{steps-1}
    for t in 0..steps {
        // The recurrent term for the whole batch: rows h_{t-1} of every sample.
        if gru {
            for b in 0..batch {
                aux[b * a + hh_offset + t * w..][..w].copy_from_slice(bias_hh);
            }
        }
        if t > 0 {
            let prev = rows_ref(output, (t - 1) * h, batch, h, steps * h);
            let (offset, accum) = if gru {
                (hh_offset + t * w, Accum::Add)
            } else {
                (t * w, Accum::Add)
            };
            matmul(
                rows_mut(aux, offset, batch, w, a),
                accum,
                prev,
                w_hh.transpose(),
                T::ONE,
                Par::Seq,
            );
        }
        for b in 0..batch {
            let sample_aux = &mut aux[b * a..][..a];
            let out = &mut output[b * steps * h..][..steps * h];
            let (before, rest) = out.split_at_mut(t * h);
            let h_prev = if t > 0 {
                Some(&before[(t - 1) * h..])
            } else {
                None
            };
            let h_t = &mut rest[..h];
            // Nonlinearities run over whole gate blocks, so the f32 path vectorises.
            match s.cell {
                Cell::Rnn => {
                    let g = &mut sample_aux[t * w..][..w];
                    T::tanh_in_place(g);
                    h_t.copy_from_slice(g);
                }
                Cell::Lstm => {
                    let (gates, cells) = sample_aux.split_at_mut(c_offset);
                    let g = &mut gates[t * w..][..w];
                    let (input_forget, rest) = g.split_at_mut(2 * h);
                    let (candidate, output_gate) = rest.split_at_mut(h);
                    T::sigmoid_in_place(input_forget);
                    T::tanh_in_place(candidate);
                    T::sigmoid_in_place(output_gate);
                    let (i, fg) = input_forget.split_at(h);
                    let (before, current) = cells.split_at_mut(t * h);
                    for j in 0..h {
                        let c_prev = if t > 0 {
                            before[(t - 1) * h + j]
                        } else {
                            T::ZERO
                        };
                        current[j] = fg[j] * c_prev + i[j] * candidate[j];
                        h_t[j] = current[j];
                    }
                    T::tanh_in_place(h_t);
                    for (hv, &o) in h_t.iter_mut().zip(output_gate.iter()) {
                        *hv *= o;
                    }
                }
                Cell::Gru => {
                    let (gates, hh) = sample_aux.split_at_mut(hh_offset);
                    let g = &mut gates[t * w..][..w];
                    let p = &hh[t * w..][..w];
                    for (gv, &pv) in g[..2 * h].iter_mut().zip(&p[..2 * h]) {
                        *gv += pv;
                    }
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
    }
}

/// Backpropagation through time. `grad_output` (every step's hidden-state gradient) is
/// used as scratch; `aux` is turned into gate gradients. The four parameter gradients
/// are replaced; `grad_input`, if asked for, is replaced or accumulated.
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
    let w_hh = MatRef::from_row_major_slice(weight_hh, w, h);
    let hh_offset = steps * w;
    let c_offset = steps * w;
    let carry_offset = c_offset + steps * h;
    if s.cell == Cell::Lstm {
        for b in 0..batch {
            aux[b * a + carry_offset..][..h].fill(T::ZERO);
        }
    }
    for t in (0..steps).rev() {
        for b in 0..batch {
            let sample_aux = &mut aux[b * a..][..a];
            let go = &mut grad_output[b * steps * h..][..steps * h];
            let (go_before, go_rest) = go.split_at_mut(t * h);
            let dh = &go_rest[..h];
            let out = &output[b * steps * h..][..steps * h];
            match s.cell {
                Cell::Rnn => {
                    for ((g, &d), &hv) in sample_aux[t * w..][..w]
                        .iter_mut()
                        .zip(dh)
                        .zip(&out[t * h..][..h])
                    {
                        *g = d * (T::ONE - hv * hv);
                    }
                }
                Cell::Lstm => {
                    let (gates, cells) = sample_aux.split_at_mut(c_offset);
                    let (cells, carry) = cells.split_at_mut(steps * h);
                    let g = &mut gates[t * w..][..w];
                    for j in 0..h {
                        let (i, fg, gg, o) = (g[j], g[h + j], g[2 * h + j], g[3 * h + j]);
                        let c = cells[t * h + j];
                        let tc = c.tanh();
                        let c_prev = if t > 0 {
                            cells[(t - 1) * h + j]
                        } else {
                            T::ZERO
                        };
                        let d_o = dh[j] * tc;
                        let dc = dh[j] * o * (T::ONE - tc * tc) + carry[j];
                        carry[j] = dc * fg;
                        g[j] = dc * gg * i * (T::ONE - i);
                        g[h + j] = dc * c_prev * fg * (T::ONE - fg);
                        g[2 * h + j] = dc * i * (T::ONE - gg * gg);
                        g[3 * h + j] = d_o * o * (T::ONE - o);
                    }
                }
                Cell::Gru => {
                    let (gates, hh) = sample_aux.split_at_mut(hh_offset);
                    let g = &mut gates[t * w..][..w];
                    let p = &mut hh[t * w..][..w];
                    for j in 0..h {
                        let (r, z, n) = (g[j], g[h + j], g[2 * h + j]);
                        let prev = if t > 0 { out[(t - 1) * h + j] } else { T::ZERO };
                        let dn = dh[j] * (T::ONE - z);
                        let dz = dh[j] * (prev - n);
                        let dan = dn * (T::ONE - n * n);
                        let dar = dan * p[2 * h + j] * r * (T::ONE - r);
                        let daz = dz * z * (T::ONE - z);
                        g[j] = dar;
                        g[h + j] = daz;
                        g[2 * h + j] = dan;
                        p[j] = dar;
                        p[h + j] = daz;
                        p[2 * h + j] = dan * r;
                        if t > 0 {
                            go_before[(t - 1) * h + j] += dh[j] * z;
                        }
                    }
                }
            }
        }
        if t > 0 {
            // dL/dh_{t-1} += (hidden-side gate gradients) · W_hh, for the whole batch.
            let offset = if s.cell == Cell::Gru {
                hh_offset + t * w
            } else {
                t * w
            };
            let dgates = rows_ref(aux, offset, batch, w, a);
            matmul(
                rows_mut(grad_output, (t - 1) * h, batch, h, steps * h),
                Accum::Add,
                dgates,
                w_hh,
                T::ONE,
                Par::Seq,
            );
        }
    }
    let hh_part = if s.cell == Cell::Gru { hh_offset } else { 0 };
    grad_bias_ih.fill(T::ZERO);
    grad_bias_hh.fill(T::ZERO);
    for b in 0..batch {
        let sample_aux = &aux[b * a..][..a];
        for t in 0..steps {
            for j in 0..w {
                grad_bias_ih[j] += sample_aux[t * w + j];
                grad_bias_hh[j] += sample_aux[hh_part + t * w + j];
            }
        }
        let dgates = MatRef::from_row_major_slice(&sample_aux[..steps * w], steps, w);
        let x = MatRef::from_row_major_slice(&input[b * steps * f..][..steps * f], steps, f);
        let accum = if b == 0 { Accum::Replace } else { Accum::Add };
        matmul(
            MatMut::from_row_major_slice_mut(&mut *grad_weight_ih, w, f),
            accum,
            dgates.transpose(),
            x,
            T::ONE,
            Par::Seq,
        );
        if b == 0 {
            grad_weight_hh.fill(T::ZERO);
        }
        if steps > 1 {
            let dgates_hh = MatRef::from_row_major_slice(
                &sample_aux[hh_part + w..][..(steps - 1) * w],
                steps - 1,
                w,
            );
            let prev = MatRef::from_row_major_slice(
                &output[b * steps * h..][..(steps - 1) * h],
                steps - 1,
                h,
            );
            matmul(
                MatMut::from_row_major_slice_mut(&mut *grad_weight_hh, w, h),
                Accum::Add,
                dgates_hh.transpose(),
                prev,
                T::ONE,
                Par::Seq,
            );
        }
    }
    if let Some((grad_input, accum)) = grad_input {
        check_len("recurrent grad_input", grad_input.len(), batch * steps * f);
        let w_ih = MatRef::from_row_major_slice(weight_ih, w, f);
        for b in 0..batch {
            let dgates = MatRef::from_row_major_slice(&aux[b * a..][..steps * w], steps, w);
            let dst = MatMut::from_row_major_slice_mut(
                &mut grad_input[b * steps * f..][..steps * f],
                steps,
                f,
            );
            matmul(dst, accum, dgates, w_ih, T::ONE, Par::Seq);
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
            let mut y = vec![0.0; batch * steps * h];
            let mut aux = vec![0.0; batch * s.aux_len()];
            recurrent_forward(&s, &mut y, &mut aux, x, w_ih, w_hh, b_ih, b_hh, batch);
            (y, aux)
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
            for steps in [1, 2, 5] {
                check(cell, steps);
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
}
