//! Upsampling of `[channels, height, width]` by whole factors (PyTorch's
//! `nn.Upsample(scale_factor = (sh, sw), mode = ..)`), with no parameters.
//!
//! - `Nearest`: output `(y, x)` copies input `(⌊y / sh⌋, ⌊x / sw⌋)`.
//! - `Bilinear`: PyTorch's `align_corners = False`, where output `y` samples the input at
//!   `max(0, (y + ½) / sh − ½)` and blends the two rows around it (the last row is
//!   repeated past the edge), and likewise along the width.
//!
//! The backward pass sends each output gradient back to the input values it was made
//! from, with the same weights.

use super::{check_len, for_row_blocks, Accum};
use crate::Float;

/// How new values are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// Each value repeated.
    Nearest,
    /// A blend of the four nearest values.
    Bilinear,
}

/// The geometry of an upsampling, fixed at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpsampleShape {
    /// Channels, unchanged.
    pub channels: usize,
    /// Input height and width.
    pub in_size: (usize, usize),
    /// Whole scale factors along height and width.
    pub scale: (usize, usize),
    /// How new values are made.
    pub mode: Interpolation,
}

impl UpsampleShape {
    /// Output height and width.
    pub const fn out_size(&self) -> (usize, usize) {
        (self.in_size.0 * self.scale.0, self.in_size.1 * self.scale.1)
    }
    /// Values per input sample.
    pub const fn input_len(&self) -> usize {
        self.channels * self.in_size.0 * self.in_size.1
    }
    /// Values per output sample.
    pub const fn output_len(&self) -> usize {
        self.input_len() * self.scale.0 * self.scale.1
    }
}

/// Where output index `o` reads along one axis of `len` inputs scaled by `scale`: the
/// two input indices and the weight of the second, PyTorch's `align_corners = False`.
#[inline(always)]
fn taps<T: Float>(o: usize, len: usize, scale: usize) -> (usize, usize, T) {
    let source = ((o as f64 + 0.5) / scale as f64 - 0.5).max(0.0);
    let i0 = (source as usize).min(len - 1);
    let i1 = if i0 + 1 < len { i0 + 1 } else { i0 };
    (i0, i1, T::from_f64(source - i0 as f64))
}

/// Upsamples a batch.
///
/// # Panics
/// If a buffer's length does not match the geometry.
pub fn upsample_forward<T: Float>(s: &UpsampleShape, output: &mut [T], input: &[T], batch: usize) {
    check_len("upsample input", input.len(), batch * s.input_len());
    check_len("upsample output", output.len(), batch * s.output_len());
    let (ih, iw) = s.in_size;
    let (oh, ow) = s.out_size();
    let (sh, sw) = s.scale;
    // Each output row of a channel is one body call's unit: rows of `ow` values.
    let rows_per_sample = s.channels * oh;
    for_row_blocks(output, ow, 8.0 * ow as f64, &|first, block: &mut [T]| {
        for (r, row) in block.chunks_exact_mut(ow).enumerate() {
            let r = first + r;
            let (n, c, y) = (r / rows_per_sample, (r / oh) % s.channels, r % oh);
            let plane = &input[(n * s.channels + c) * ih * iw..][..ih * iw];
            match s.mode {
                Interpolation::Nearest => {
                    let src = &plane[(y / sh) * iw..][..iw];
                    for (x, v) in row.iter_mut().enumerate() {
                        *v = src[x / sw];
                    }
                }
                Interpolation::Bilinear => {
                    let (y0, y1, ly) = taps::<T>(y, ih, sh);
                    let (top, bottom) = (&plane[y0 * iw..][..iw], &plane[y1 * iw..][..iw]);
                    for (x, v) in row.iter_mut().enumerate() {
                        let (x0, x1, lx) = taps::<T>(x, iw, sw);
                        let (hy, hx) = (T::ONE - ly, T::ONE - lx);
                        *v = hy * (hx * top[x0] + lx * top[x1])
                            + ly * (hx * bottom[x0] + lx * bottom[x1]);
                    }
                }
            }
        }
    });
}

/// Gradient of [`upsample_forward`], replacing or accumulating into `grad_input`.
///
/// # Panics
/// If a buffer's length does not match the geometry.
pub fn upsample_backward<T: Float>(
    s: &UpsampleShape,
    grad_input: &mut [T],
    accum: Accum,
    grad_output: &[T],
    batch: usize,
) {
    check_len(
        "upsample grad_input",
        grad_input.len(),
        batch * s.input_len(),
    );
    check_len(
        "upsample grad_output",
        grad_output.len(),
        batch * s.output_len(),
    );
    let (ih, iw) = s.in_size;
    let (oh, ow) = s.out_size();
    let (sh, sw) = s.scale;
    let plane = ih * iw;
    // One channel plane of the input gradient per unit: it gathers from its own
    // output plane only, so the split does not change any sum's order.
    let flops = 8.0 * (oh * ow) as f64;
    for_row_blocks(grad_input, plane, flops, &|first, block: &mut [T]| {
        for (p, gi) in block.chunks_exact_mut(plane).enumerate() {
            let go = &grad_output[(first + p) * oh * ow..][..oh * ow];
            if accum == Accum::Replace {
                gi.fill(T::ZERO);
            }
            match s.mode {
                Interpolation::Nearest => {
                    for (y, row) in go.chunks_exact(ow).enumerate() {
                        let dst = &mut gi[(y / sh) * iw..][..iw];
                        for (x, &g) in row.iter().enumerate() {
                            dst[x / sw] += g;
                        }
                    }
                }
                Interpolation::Bilinear => {
                    for (y, row) in go.chunks_exact(ow).enumerate() {
                        let (y0, y1, ly) = taps::<T>(y, ih, sh);
                        let hy = T::ONE - ly;
                        for (x, &g) in row.iter().enumerate() {
                            let (x0, x1, lx) = taps::<T>(x, iw, sw);
                            let hx = T::ONE - lx;
                            gi[y0 * iw + x0] += hy * hx * g;
                            gi[y0 * iw + x1] += hy * lx * g;
                            gi[y1 * iw + x0] += ly * hx * g;
                            gi[y1 * iw + x1] += ly * lx * g;
                        }
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn shape(
        c: usize,
        hw: (usize, usize),
        scale: (usize, usize),
        mode: Interpolation,
    ) -> UpsampleShape {
        UpsampleShape {
            channels: c,
            in_size: hw,
            scale,
            mode,
        }
    }

    #[test]
    fn nearest_repeats_each_value() {
        let s = shape(1, (2, 2), (2, 3), Interpolation::Nearest);
        let mut y = vec![0.0; s.output_len()];
        upsample_forward(&s, &mut y, &[1.0, 2.0, 3.0, 4.0], 1);
        #[rustfmt::skip]
        let expected = [
            1.0, 1.0, 1.0, 2.0, 2.0, 2.0,
            1.0, 1.0, 1.0, 2.0, 2.0, 2.0,
            3.0, 3.0, 3.0, 4.0, 4.0, 4.0,
            3.0, 3.0, 3.0, 4.0, 4.0, 4.0,
        ];
        assert_eq!(y, expected);
    }

    #[test]
    fn bilinear_matches_pytorch_on_a_known_case() {
        // torch.nn.functional.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]),
        // scale_factor=2, mode="bilinear", align_corners=False), worked by hand: the
        // edges repeat, the inner values are ¼ and ¾ blends.
        let s = shape(1, (2, 2), (2, 2), Interpolation::Bilinear);
        let mut y = vec![0.0; s.output_len()];
        upsample_forward(&s, &mut y, &[1.0, 2.0, 3.0, 4.0], 1);
        #[rustfmt::skip]
        let expected = [
            1.0, 1.25, 1.75, 2.0,
            1.5, 1.75, 2.25, 2.5,
            2.5, 2.75, 3.25, 3.5,
            3.0, 3.25, 3.75, 4.0,
        ];
        assert_close(&y, &expected, 1e-15);
    }

    #[test]
    fn gradients_match_finite_differences() {
        for s in [
            shape(2, (3, 4), (2, 2), Interpolation::Nearest),
            shape(3, (2, 3), (3, 2), Interpolation::Nearest),
            shape(2, (3, 4), (2, 2), Interpolation::Bilinear),
            shape(2, (4, 3), (3, 2), Interpolation::Bilinear),
            shape(1, (1, 5), (4, 1), Interpolation::Bilinear),
        ] {
            let batch = 2;
            let x = values(batch * s.input_len(), 1);
            let c = values(batch * s.output_len(), 2);
            let loss = |x: &[f64]| {
                let mut y = vec![0.0; c.len()];
                upsample_forward(&s, &mut y, x, batch);
                dot(&c, &y)
            };
            let numeric = numeric_grad(&x, 1e-6, loss);
            let mut gx = vec![0.0; x.len()];
            upsample_backward(&s, &mut gx, Accum::Replace, &c, batch);
            assert_close(&gx, &numeric, 1e-8);
            // Accumulating adds onto what is there.
            let before = values(x.len(), 3);
            let mut acc = before.clone();
            upsample_backward(&s, &mut acc, Accum::Add, &c, batch);
            let sum: Vec<f64> = numeric.iter().zip(&before).map(|(a, b)| a + b).collect();
            assert_close(&acc, &sum, 1e-8);
        }
    }
}
