//! Transposed 2-d convolution (PyTorch's `nn.ConvTranspose2d`), the decoder's
//! upsampling layer: the gradient of a [`conv2d_forward`](super::conv2d_forward) with
//! respect to its input, run forwards.
//!
//! The geometry is that of the convolution being transposed, a [`Conv2dShape`] `s`
//! read backwards: this layer's input is `s`'s output (`[s.out_channels, s.out_size]`)
//! and its output is `s`'s input (`[s.in_channels, s.in_size]`), so that
//! `out = (in − 1)·stride − 2·padding + dilation·(kernel − 1) + output_padding + 1`.
//! The weight is PyTorch's `[in, out, kh, kw]`, which row-major is `s`'s own
//! `[s.out_channels, K]` matrix (`K = s.in_channels · kh · kw`). Per sample, with `x`
//! the `[in, P]` input (`P = s.p()` positions):
//!
//! - forward: `col = Wᵀ · x` (`K x P`), then col2im adds the columns onto the output,
//!   which starts at the bias;
//! - backward: `col = im2col(g)` of the output gradient `g`, then
//!   `grad_weight = Σ_n x_n · col_nᵀ`, `grad_input = W · col`, and
//!   `grad_bias = Σ g` per output channel.
//!
//! There is no fused activation: the layers after it run as their own steps.
//!
//! # Shapes
//! `input`: `batch x [s.out_channels, s.out_size]`; `output`: `batch x [s.in_channels,
//! s.in_size]`; `cols`: `batch x K x P` of scratch.
//!
//! # Initialisation
//! PyTorch's default for `ConvTranspose2d`: weight and bias ~ `U(-1/√K, 1/√K)`, whose
//! fan-in is the weight's second dimension times the kernel's area.

use faer::{MatMut, MatRef, Par};

use super::conv::{col2im, im2col};
use super::{bias_grad, check_len, matmul, split_batch, Accum, PARALLEL_MIN_FLOPS};
use crate::Float;
use kiln_shapes::Conv2dShape;

/// `output = conv_transpose(input, weight) + bias`, with `s` the convolution it
/// transposes (see the module's documentation). `cols` is scratch.
///
/// # Panics
/// If a buffer's length does not match the geometry.
pub fn conv_transpose2d_forward<T: Float>(
    s: &Conv2dShape,
    output: &mut [T],
    cols: &mut [T],
    input: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    batch: usize,
) {
    let (ilen, olen) = (s.output_len(), s.input_len());
    check_len("conv_transpose2d input", input.len(), batch * ilen);
    check_len("conv_transpose2d output", output.len(), batch * olen);
    check_len("conv_transpose2d cols", cols.len(), batch * s.cols_len());
    check_len(
        "conv_transpose2d weight",
        weight.len(),
        s.out_channels * s.k(),
    );
    if let Some(bias) = bias {
        check_len("conv_transpose2d bias", bias.len(), s.in_channels);
    }
    let w = MatRef::from_row_major_slice(weight, s.out_channels, s.k());
    let plane = s.in_size.0 * s.in_size.1;
    split_batch(
        batch,
        2.0 * (s.out_channels * s.cols_len()) as f64,
        (output, olen),
        (cols, s.cols_len()),
        &|first, out: &mut [T], cols: &mut [T]| {
            for (n, (y, col)) in out
                .chunks_exact_mut(olen)
                .zip(cols.chunks_exact_mut(s.cols_len()))
                .enumerate()
            {
                let x = &input[(first + n) * ilen..][..ilen];
                let x = MatRef::from_row_major_slice(x, s.out_channels, s.p());
                let dst = MatMut::from_row_major_slice_mut(col, s.k(), s.p());
                matmul(dst, Accum::Replace, w.transpose(), x, T::ONE, Par::Seq);
                for (c, channel) in y.chunks_exact_mut(plane).enumerate() {
                    channel.fill(bias.map_or(T::ZERO, |b| b[c]));
                }
                col2im(s, y, col);
            }
        },
    );
}

/// Gradients of [`conv_transpose2d_forward`]: `grad_weight` and `grad_bias` are
/// replaced, `grad_input`, if asked for, replaced or accumulated. `cols` and `partial`
/// ([`Conv2dShape::transposed_partial_len`] values) are scratch.
///
/// # Panics
/// If a buffer's length does not match the geometry.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_backward<T: Float>(
    s: &Conv2dShape,
    grad_input: Option<(&mut [T], Accum)>,
    grad_weight: &mut [T],
    grad_bias: Option<&mut [T]>,
    partial: &mut [T],
    cols: &mut [T],
    input: &[T],
    weight: &[T],
    grad_output: &[T],
    batch: usize,
) {
    let (k, p, ci) = (s.k(), s.p(), s.out_channels);
    let (ilen, olen) = (s.output_len(), s.input_len());
    check_len("conv_transpose2d input", input.len(), batch * ilen);
    check_len(
        "conv_transpose2d grad_output",
        grad_output.len(),
        batch * olen,
    );
    check_len("conv_transpose2d cols", cols.len(), batch * s.cols_len());
    check_len("conv_transpose2d grad_weight", grad_weight.len(), ci * k);
    check_len(
        "conv_transpose2d partial",
        partial.len(),
        s.transposed_partial_len(),
    );
    if let Some((grad_input, _)) = &grad_input {
        check_len(
            "conv_transpose2d grad_input",
            grad_input.len(),
            batch * ilen,
        );
    }
    let w = MatRef::from_row_major_slice(weight, ci, k);
    // Per half of the batch: the columns of its output gradient, its weight gradient
    // (into a buffer of its own) and its input gradient.
    let run = |first: usize, gw: &mut [T], cols: &mut [T], gi: Option<(&mut [T], Accum)>| {
        let count = cols.len() / s.cols_len();
        let mut gi = gi;
        for n in 0..count {
            let col = &mut cols[n * s.cols_len()..][..s.cols_len()];
            im2col(s, col, &grad_output[(first + n) * olen..][..olen]);
            let col = MatRef::from_row_major_slice(col, k, p);
            let x = MatRef::from_row_major_slice(&input[(first + n) * ilen..][..ilen], ci, p);
            let accum = if n == 0 { Accum::Replace } else { Accum::Add };
            let dst = MatMut::from_row_major_slice_mut(&mut *gw, ci, k);
            matmul(dst, accum, x, col.transpose(), T::ONE, Par::Seq);
            if let Some((gi, accum)) = gi.as_mut() {
                let dst = MatMut::from_row_major_slice_mut(&mut gi[n * ilen..][..ilen], ci, p);
                matmul(dst, *accum, w, col, T::ONE, Par::Seq);
            }
        }
    };
    let flops = 4.0 * (ci * s.cols_len()) as f64;
    if batch >= 2 && flops * batch as f64 >= PARALLEL_MIN_FLOPS {
        let half = batch / 2;
        let (c0, c1) = cols.split_at_mut(half * s.cols_len());
        let (gi0, gi1) = match grad_input {
            Some((gi, accum)) => {
                let (a, b) = gi.split_at_mut(half * ilen);
                (Some((a, accum)), Some((b, accum)))
            }
            None => (None, None),
        };
        super::join(
            || run(0, grad_weight, c0, gi0),
            || run(half, partial, c1, gi1),
        );
        for (w, &q) in grad_weight.iter_mut().zip(partial.iter()) {
            *w += q;
        }
    } else if batch > 0 {
        run(0, grad_weight, cols, grad_input);
    } else {
        grad_weight.fill(T::ZERO);
    }
    if let Some(grad_bias) = grad_bias {
        check_len("conv_transpose2d grad_bias", grad_bias.len(), s.in_channels);
        let plane = s.in_size.0 * s.in_size.1;
        bias_grad(grad_bias, grad_output, olen, plane);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    /// The convolution that `ConvTranspose2d(out, kernel, stride, padding,
    /// output_padding, dilation)` on `[cin, h, w]` transposes.
    fn shape(
        cin: usize,
        hw: (usize, usize),
        cout: usize,
        k: (usize, usize),
        st: (usize, usize),
        pad: (usize, usize),
        out_pad: (usize, usize),
        dil: (usize, usize),
    ) -> Conv2dShape {
        let out = |i: usize, k: usize, s: usize, p: usize, op: usize, d: usize| {
            (i - 1) * s + d * (k - 1) + op + 1 - 2 * p
        };
        Conv2dShape {
            in_channels: cout,
            in_size: (
                out(hw.0, k.0, st.0, pad.0, out_pad.0, dil.0),
                out(hw.1, k.1, st.1, pad.1, out_pad.1, dil.1),
            ),
            out_channels: cin,
            kernel: k,
            stride: st,
            padding: pad,
            dilation: dil,
            out_size: hw,
        }
    }

    /// The definition: every input value scatters `weight[ci, co] · x` onto the output
    /// positions its taps reach.
    fn naive(s: &Conv2dShape, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let (cin, cout) = (s.out_channels, s.in_channels);
        let (h, wd) = s.out_size;
        let (oh, ow) = s.in_size;
        let (kh, kw) = s.kernel;
        let mut y = vec![0.0; s.input_len()];
        for co in 0..cout {
            for v in &mut y[co * oh * ow..][..oh * ow] {
                *v = b[co];
            }
        }
        for ci in 0..cin {
            for iy in 0..h {
                for ix in 0..wd {
                    let v = x[(ci * h + iy) * wd + ix];
                    for co in 0..cout {
                        for i in 0..kh {
                            for j in 0..kw {
                                let y0 = (iy * s.stride.0 + i * s.dilation.0) as isize
                                    - s.padding.0 as isize;
                                let x0 = (ix * s.stride.1 + j * s.dilation.1) as isize
                                    - s.padding.1 as isize;
                                if y0 < 0 || x0 < 0 || y0 >= oh as isize || x0 >= ow as isize {
                                    continue;
                                }
                                let wi = ((ci * cout + co) * kh + i) * kw + j;
                                y[(co * oh + y0 as usize) * ow + x0 as usize] += w[wi] * v;
                            }
                        }
                    }
                }
            }
        }
        y
    }

    fn check(s: Conv2dShape, batch: usize) {
        let (ilen, olen) = (s.output_len(), s.input_len());
        let x = values(batch * ilen, 11);
        let w = values(s.out_channels * s.k(), 12);
        let b = values(s.in_channels, 13);
        let forward = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut y = vec![0.0; batch * olen];
            let mut cols = vec![0.0; batch * s.cols_len()];
            conv_transpose2d_forward(&s, &mut y, &mut cols, x, w, Some(b), batch);
            y
        };
        let y = forward(&x, &w, &b);
        for n in 0..batch {
            let expected = naive(&s, &x[n * ilen..][..ilen], &w, &b);
            assert_close(&y[n * olen..][..olen], &expected, 1e-12);
        }
        let c = values(y.len(), 14);
        let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&c, &forward(x, w, b));
        // The input gradient accumulates onto what is there.
        let before = values(x.len(), 15);
        let mut gx = before.clone();
        let mut gw = vec![0.0; w.len()];
        let mut gb = vec![0.0; b.len()];
        let mut partial = vec![0.0; s.transposed_partial_len()];
        let mut cols = vec![0.0; batch * s.cols_len()];
        conv_transpose2d_backward(
            &s,
            Some((&mut gx, Accum::Add)),
            &mut gw,
            Some(&mut gb),
            &mut partial,
            &mut cols,
            &x,
            &w,
            &c,
            batch,
        );
        let numeric: Vec<f64> = numeric_grad(&x, 1e-6, |x| loss(x, &w, &b))
            .iter()
            .zip(&before)
            .map(|(g, b)| g + b)
            .collect();
        assert_close(&gx, &numeric, 1e-7);
        assert_close(&gw, &numeric_grad(&w, 1e-6, |w| loss(&x, w, &b)), 1e-7);
        assert_close(&gb, &numeric_grad(&b, 1e-6, |b| loss(&x, &w, b)), 1e-7);
    }

    #[test]
    fn matches_the_definition_and_finite_differences() {
        // The U-Net's 2x upsampling: kernel 2, stride 2.
        check(
            shape(3, (3, 4), 2, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1)),
            2,
        );
        // Stride 2, padding 1, output_padding 1: exactly doubles the size.
        check(
            shape(2, (4, 3), 3, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)),
            2,
        );
        // Unequal strides, paddings and output paddings, with dilation.
        check(
            shape(2, (3, 5), 2, (3, 2), (3, 2), (2, 0), (2, 1), (2, 1)),
            1,
        );
        // Stride 1 (the transpose of a "same" convolution).
        check(
            shape(2, (5, 5), 1, (3, 3), (1, 1), (1, 1), (0, 0), (1, 1)),
            3,
        );
    }

    #[test]
    fn split_batches_give_the_serial_result() {
        // 64 samples of [16, 14, 14] → [8, 28, 28] is above the threshold.
        let s = shape(16, (14, 14), 8, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1));
        let batch = 64;
        let (ilen, olen) = (s.output_len(), s.input_len());
        let x = values(batch * ilen, 21);
        let w = values(s.out_channels * s.k(), 22);
        let go = values(batch * olen, 23);
        let mut cols = vec![0.0; batch * s.cols_len()];
        let mut partial = vec![0.0; s.transposed_partial_len()];
        let (mut gw, mut gx) = (vec![0.0; w.len()], vec![0.0; x.len()]);
        conv_transpose2d_backward(
            &s,
            Some((&mut gx, Accum::Replace)),
            &mut gw,
            None,
            &mut partial,
            &mut cols,
            &x,
            &w,
            &go,
            batch,
        );
        let mut gw_serial = vec![0.0; w.len()];
        for n in 0..batch {
            let (mut g1, mut gx1) = (vec![0.0; w.len()], vec![0.0; ilen]);
            conv_transpose2d_backward(
                &s,
                Some((&mut gx1, Accum::Replace)),
                &mut g1,
                None,
                &mut partial,
                &mut cols[..s.cols_len()],
                &x[n * ilen..][..ilen],
                &w,
                &go[n * olen..][..olen],
                1,
            );
            assert_close(&gx1, &gx[n * ilen..][..ilen], 1e-12);
            for (a, b) in gw_serial.iter_mut().zip(&g1) {
                *a += b;
            }
        }
        assert_close(&gw, &gw_serial, 1e-10);
    }
}
