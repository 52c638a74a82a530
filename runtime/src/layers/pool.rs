//! Pooling over `[channels, height, width]` samples: max (with the argmax kept for
//! backward), average (PyTorch's `count_include_pad=True`: every window divides by
//! `kh · kw`) and global average (`[C, H, W]` to `[C]`).
//!
//! Windows use the same geometry as convolutions ([`Conv2dShape`], with
//! `out_channels = in_channels`); padded positions never win a max and count as zeros
//! in an average.
//!
//! # Shapes
//! `input`: `batch x [C, H, W]`; `output`: `batch x [C, out_h, out_w]` (or `[C]` for the
//! global average); `argmax`: like `output`.

use super::split_batch;
#[cfg(target_arch = "x86_64")]
use super::{as_f32, as_f32_mut};
use super::{check_len, for_row_blocks, Accum};
use crate::Float;
use kiln_shapes::Conv2dShape;

/// Max pooling; `argmax` receives, for each output, the index within its sample of the
/// input that won (ties go to the first in row-major order).
///
/// # Panics
/// If a buffer's length does not match the geometry.
pub fn max_pool2d_forward<T: Float>(
    s: &Conv2dShape,
    output: &mut [T],
    argmax: &mut [T],
    input: &[T],
    batch: usize,
) {
    check_len("max_pool2d input", input.len(), batch * s.input_len());
    check_len("max_pool2d output", output.len(), batch * s.output_len());
    check_len("max_pool2d argmax", argmax.len(), batch * s.output_len());
    let taps = s.kernel.0 * s.kernel.1;
    split_batch(
        batch,
        (s.input_len() + s.output_len() * taps) as f64 * MEMORY_BOUND_WEIGHT,
        (output, s.output_len()),
        (argmax, s.output_len()),
        &|first, out: &mut [T], arg: &mut [T]| {
            for (n, (out, arg)) in out
                .chunks_exact_mut(s.output_len())
                .zip(arg.chunks_exact_mut(s.output_len()))
                .enumerate()
            {
                let x = &input[(first + n) * s.input_len()..][..s.input_len()];
                max_pool_sample(s, out, arg, x);
            }
        },
    );
}

/// Pooling and the scatter of its gradient are loads, compares and stores, not
/// multiply-adds: each value read and each compare is counted as this many FLOPs
/// against the threshold for splitting a batch across threads. With it both of the
/// benchmark CNN's pools split; the second (64 × 11 × 11 inputs a sample, 180 µs a
/// batch of 64 on one thread) did not when only the compares counted.
const MEMORY_BOUND_WEIGHT: f64 = 8.0;

/// Max pooling of one sample.
fn max_pool_sample<T: Float>(s: &Conv2dShape, output: &mut [T], argmax: &mut [T], x: &[T]) {
    if s.padding != (0, 0) {
        max_pool_padded(s, output, argmax, x);
    } else if is_2x2(s) {
        max_pool_2x2(s, output, argmax, x);
    } else {
        max_pool_unpadded(s, output, argmax, x);
    }
}

/// Whether the windows are the common 2x2 with stride 2, no padding, no dilation.
fn is_2x2(s: &Conv2dShape) -> bool {
    s.kernel == (2, 2) && s.stride == (2, 2) && s.padding == (0, 0) && s.dilation == (1, 1)
}

/// Without padding every tap of every window is inside, so no bounds arithmetic.
fn max_pool_unpadded<T: Float>(s: &Conv2dShape, output: &mut [T], argmax: &mut [T], x: &[T]) {
    let (ih, iw) = s.in_size;
    let (oh, ow) = s.out_size;
    let (kh, kw) = s.kernel;
    let (sy, sx) = s.stride;
    let (dy, dx) = s.dilation;
    for c in 0..s.in_channels {
        let plane = c * ih * iw;
        for oy in 0..oh {
            for ox in 0..ow {
                let corner = plane + oy * sy * iw + ox * sx;
                let (mut index, mut best) = (corner, x[corner]);
                for i in 0..kh {
                    for j in 0..kw {
                        // Selects, not a branch: on real activations the winner is
                        // unpredictable, and a mispredicted branch per tap made this
                        // loop an eighth of the benchmark CNN's step.
                        let at = corner + i * dy * iw + j * dx;
                        let better = x[at] > best;
                        best = if better { x[at] } else { best };
                        index = if better { at } else { index };
                    }
                }
                let o = (c * oh + oy) * ow + ox;
                output[o] = best;
                argmax[o] = T::from_f64(index as f64);
            }
        }
    }
}

/// The general case: taps that fall on padding are skipped.
fn max_pool_padded<T: Float>(s: &Conv2dShape, output: &mut [T], argmax: &mut [T], x: &[T]) {
    let (ih, iw) = s.in_size;
    let (oh, ow) = s.out_size;
    let (kh, kw) = s.kernel;
    for c in 0..s.in_channels {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<(usize, T)> = None;
                for i in 0..kh {
                    for j in 0..kw {
                        if let Some((y, xx)) = s.source(oy, ox, i, j) {
                            let index = (c * ih + y) * iw + xx;
                            let v = x[index];
                            if best.is_none_or(|(_, b)| v > b) {
                                best = Some((index, v));
                            }
                        }
                    }
                }
                // The macro guarantees every window holds at least one input.
                let (index, value) = best.unwrap_or((0, T::ZERO));
                let o = (c * oh + oy) * ow + ox;
                output[o] = value;
                argmax[o] = T::from_f64(index as f64);
            }
        }
    }
}

/// The common 2x2 window with stride 2 and no padding: two input rows give one output
/// row, the four taps are compared with selects in a fixed order (ties go to the first
/// in row-major order, as in the general path). Rows of f32 take the AVX-512 kernel:
/// the compiler does not vectorise the portable loop (pooled rows are 5 to 13 values
/// in the benchmark CNN, shorter than its vector loop wants).
fn max_pool_2x2<T: Float>(s: &Conv2dShape, output: &mut [T], argmax: &mut [T], x: &[T]) {
    let (ih, iw) = s.in_size;
    let (oh, ow) = s.out_size;
    #[cfg(target_arch = "x86_64")]
    let avx512 =
        std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() && crate::simd::has_avx512();
    let (out_rows, arg_rows) = (output.chunks_exact_mut(ow), argmax.chunks_exact_mut(ow));
    for (o, (out, arg)) in out_rows.zip(arg_rows).enumerate() {
        let (c, oy) = (o / oh, o % oh);
        let top = (c * ih + 2 * oy) * iw;
        let (r0, r1) = (&x[top..][..2 * ow], &x[top + iw..][..2 * ow]);
        #[cfg(target_arch = "x86_64")]
        if avx512 {
            // SAFETY: `T` is `f32` (same type id) and the processor has AVX-512F.
            unsafe {
                x86::max_pool_row_2x2(
                    as_f32_mut(out),
                    as_f32_mut(arg),
                    as_f32(r0),
                    as_f32(r1),
                    top,
                    iw,
                );
            }
            continue;
        }
        max_pool_row_2x2(out, arg, r0, r1, top, iw);
    }
}

/// One output row of [`max_pool_2x2`] from its two input rows, which start at input
/// index `top` and are `iw` apart.
fn max_pool_row_2x2<T: Float>(
    out: &mut [T],
    arg: &mut [T],
    r0: &[T],
    r1: &[T],
    top: usize,
    iw: usize,
) {
    let (one, width) = (T::ONE, T::from_f64(iw as f64));
    let base = T::from_f64(top as f64);
    for ox in 0..out.len() {
        let (a, b, cc, d) = (r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]);
        let (mut best, mut at) = (a, T::ZERO);
        (best, at) = if b > best { (b, one) } else { (best, at) };
        (best, at) = if cc > best { (cc, width) } else { (best, at) };
        (best, at) = if d > best {
            (d, width + one)
        } else {
            (best, at)
        };
        out[ox] = best;
        arg[ox] = base + T::from_f64((2 * ox) as f64) + at;
    }
}

/// The 2x2 row with AVX-512: output rows of pooled feature maps are short (13 values
/// in the benchmark CNN), too short for the compiler's vector loop, so each block of
/// 16 outputs is two masked loads per input row, an even/odd split by permutes and
/// three compare-and-blend steps in the scalar path's order (ties and NaNs resolve the
/// same way: a later tap wins only if strictly greater).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) fn max_pool_row_2x2(
        out: &mut [f32],
        arg: &mut [f32],
        r0: &[f32],
        r1: &[f32],
        top: usize,
        iw: usize,
    ) {
        let ow = out.len();
        assert!(arg.len() == ow && r0.len() >= 2 * ow && r1.len() >= 2 * ow);
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let lanes = _mm512_setr_ps(
            0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0, 24.0, 26.0, 28.0,
            30.0,
        );
        let (one, width) = (_mm512_set1_ps(1.0), _mm512_set1_ps(iw as f32));
        let width_one = _mm512_add_ps(width, one);
        let mut first = 0;
        while first < ow {
            let n = (ow - first).min(16);
            let inputs = 2 * n;
            let low = inputs.min(16);
            let load = |row: &[f32]| {
                let at = 2 * first;
                // SAFETY: masked loads touch only the lanes whose mask bit is set, and
                // those read `row[at..at + inputs]`, inside the row (`2·ow` values).
                unsafe {
                    let a = _mm512_maskz_loadu_ps(mask(low), row.as_ptr().add(at));
                    let b = if inputs > 16 {
                        _mm512_maskz_loadu_ps(mask(inputs - 16), row.as_ptr().add(at + 16))
                    } else {
                        _mm512_setzero_ps()
                    };
                    (
                        _mm512_permutex2var_ps(a, even, b),
                        _mm512_permutex2var_ps(a, odd, b),
                    )
                }
            };
            let ((a, b), (c, d)) = (load(r0), load(r1));
            let (mut best, mut at) = (a, _mm512_setzero_ps());
            for (tap, offset) in [(b, one), (c, width), (d, width_one)] {
                let wins = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(tap, best);
                best = _mm512_mask_blend_ps(wins, best, tap);
                at = _mm512_mask_blend_ps(wins, at, offset);
            }
            let base = _mm512_set1_ps((top + 2 * first) as f32);
            let index = _mm512_add_ps(_mm512_add_ps(base, lanes), at);
            // SAFETY: the masked stores write `n` lanes at `first`, inside `out` and
            // `arg` (`ow` values each).
            unsafe {
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(first), mask(n), best);
                _mm512_mask_storeu_ps(arg.as_mut_ptr().add(first), mask(n), index);
            }
            first += 16;
        }
    }

    /// Max-pool backward for one output row of 2x2 windows that tile the input: `pair`
    /// is the two input rows (`iw` each, `top` the first one's index in its sample),
    /// each input gets its window's gradient if it won and zero otherwise.
    #[target_feature(enable = "avx512f")]
    pub(super) fn route_row_2x2(
        pair: &mut [f32],
        accum: crate::layers::Accum,
        g: &[f32],
        arg: &[f32],
        top: usize,
        iw: usize,
    ) {
        let ow = g.len();
        assert!(arg.len() == ow && pair.len() == 2 * iw && iw == 2 * ow);
        let add = accum == crate::layers::Accum::Add;
        let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        let lanes = _mm512_setr_ps(
            0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0, 24.0, 26.0, 28.0,
            30.0,
        );
        let width = iw as f32;
        let mut first = 0;
        while first < ow {
            let n = (ow - first).min(16);
            // SAFETY: masked loads of `n` lanes at `first`, inside `g` and `arg`.
            let (gv, av) = unsafe {
                (
                    _mm512_maskz_loadu_ps(mask(n), g.as_ptr().add(first)),
                    _mm512_maskz_loadu_ps(mask(n), arg.as_ptr().add(first)),
                )
            };
            let base = _mm512_add_ps(_mm512_set1_ps((top + 2 * first) as f32), lanes);
            let at = _mm512_sub_ps(av, base);
            let pick = |offset: f32| {
                let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(at, _mm512_set1_ps(offset));
                _mm512_maskz_mov_ps(hit, gv)
            };
            let inputs = 2 * n;
            for (row, left, right) in [
                (0, pick(0.0), pick(1.0)),
                (iw, pick(width), pick(width + 1.0)),
            ] {
                let halves = [
                    (_mm512_permutex2var_ps(left, low, right), 0, inputs.min(16)),
                    (
                        _mm512_permutex2var_ps(left, high, right),
                        16,
                        inputs.saturating_sub(16),
                    ),
                ];
                for (values, offset, count) in halves {
                    if count == 0 {
                        continue;
                    }
                    // SAFETY: `count` lanes at `row + 2·first + offset` lie inside the
                    // row (`2·first + offset + count <= 2·ow = iw`).
                    unsafe {
                        let at = pair.as_mut_ptr().add(row + 2 * first + offset);
                        let values = if add {
                            _mm512_add_ps(_mm512_maskz_loadu_ps(mask(count), at), values)
                        } else {
                            values
                        };
                        _mm512_mask_storeu_ps(at, mask(count), values);
                    }
                }
            }
            first += 16;
        }
    }

    /// The lowest `n` of 16 lanes.
    fn mask(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Routes each output gradient to the input that won its window.
///
/// # Panics
/// If a buffer's length does not match the geometry.
pub fn max_pool2d_backward<T: Float>(
    s: &Conv2dShape,
    grad_input: &mut [T],
    accum: Accum,
    argmax: &[T],
    grad_output: &[T],
    batch: usize,
) {
    check_len(
        "max_pool2d grad_input",
        grad_input.len(),
        batch * s.input_len(),
    );
    check_len(
        "max_pool2d grad_output",
        grad_output.len(),
        batch * s.output_len(),
    );
    #[cfg(target_arch = "x86_64")]
    let (iw, ow) = (s.in_size.1, s.out_size.1);
    // 2x2 windows that tile the input exactly, in f32 with AVX-512: every input is in
    // one window, so each is written once, without the zero fill and the scatter.
    #[cfg(target_arch = "x86_64")]
    let tiled = is_2x2(s)
        && s.in_size == (2 * s.out_size.0, 2 * ow)
        && std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && crate::simd::has_avx512();
    let scatter = |first: usize, gi: &mut [T]| {
        #[cfg(target_arch = "x86_64")]
        if tiled {
            let rows = gi.chunks_exact_mut(2 * iw);
            let range = first * s.output_len()..;
            let outs = grad_output[range.clone()].chunks_exact(ow);
            for (o, ((pair, g), arg)) in rows
                .zip(outs)
                .zip(argmax[range].chunks_exact(ow))
                .enumerate()
            {
                let top = o % (s.input_len() / (2 * iw)) * 2 * iw;
                // SAFETY: `T` is `f32` (same type id) and the processor has AVX-512F.
                unsafe {
                    x86::route_row_2x2(as_f32_mut(pair), accum, as_f32(g), as_f32(arg), top, iw);
                }
            }
            return;
        }
        if accum == Accum::Replace {
            gi.fill(T::ZERO);
        }
        for (n, gi) in gi.chunks_exact_mut(s.input_len()).enumerate() {
            let range = (first + n) * s.output_len()..(first + n + 1) * s.output_len();
            for (&index, &g) in argmax[range.clone()].iter().zip(&grad_output[range]) {
                gi[index.to_f64() as usize] += g;
            }
        }
    };
    // Samples are independent, so any split gives the serial result.
    for_row_blocks(
        grad_input,
        s.input_len(),
        (s.input_len() + s.output_len()) as f64 * MEMORY_BOUND_WEIGHT,
        &scatter,
    );
}

/// Average pooling, dividing every window by `kh · kw`.
///
/// # Panics
/// If a buffer's length does not match the geometry.
pub fn avg_pool2d_forward<T: Float>(s: &Conv2dShape, output: &mut [T], input: &[T], batch: usize) {
    check_len("avg_pool2d input", input.len(), batch * s.input_len());
    check_len("avg_pool2d output", output.len(), batch * s.output_len());
    let (ih, iw) = s.in_size;
    let (oh, ow) = s.out_size;
    let scale = T::ONE / T::from_f64((s.kernel.0 * s.kernel.1) as f64);
    for n in 0..batch {
        let x = &input[n * s.input_len()..][..s.input_len()];
        for c in 0..s.in_channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = T::ZERO;
                    for i in 0..s.kernel.0 {
                        for j in 0..s.kernel.1 {
                            if let Some((y, xx)) = s.source(oy, ox, i, j) {
                                sum += x[(c * ih + y) * iw + xx];
                            }
                        }
                    }
                    output[n * s.output_len() + (c * oh + oy) * ow + ox] = sum * scale;
                }
            }
        }
    }
}

/// Gradient of [`avg_pool2d_forward`].
///
/// # Panics
/// If a buffer's length does not match the geometry.
pub fn avg_pool2d_backward<T: Float>(
    s: &Conv2dShape,
    grad_input: &mut [T],
    accum: Accum,
    grad_output: &[T],
    batch: usize,
) {
    check_len(
        "avg_pool2d grad_input",
        grad_input.len(),
        batch * s.input_len(),
    );
    check_len(
        "avg_pool2d grad_output",
        grad_output.len(),
        batch * s.output_len(),
    );
    if accum == Accum::Replace {
        grad_input.fill(T::ZERO);
    }
    let (ih, iw) = s.in_size;
    let (oh, ow) = s.out_size;
    let scale = T::ONE / T::from_f64((s.kernel.0 * s.kernel.1) as f64);
    for n in 0..batch {
        let gi = &mut grad_input[n * s.input_len()..][..s.input_len()];
        for c in 0..s.in_channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = grad_output[n * s.output_len() + (c * oh + oy) * ow + ox] * scale;
                    for i in 0..s.kernel.0 {
                        for j in 0..s.kernel.1 {
                            if let Some((y, xx)) = s.source(oy, ox, i, j) {
                                gi[(c * ih + y) * iw + xx] += g;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `[C, H, W]` to `[C]`: the mean of each channel's `inner = H · W` values.
///
/// # Panics
/// If the lengths do not match `batch · CHANNELS · inner` and `batch · CHANNELS`.
pub fn global_avg_pool_forward<T: Float, const CHANNELS: usize>(
    output: &mut [T],
    input: &[T],
    inner: usize,
    batch: usize,
) {
    check_len(
        "global_avg_pool input",
        input.len(),
        batch * CHANNELS * inner,
    );
    check_len("global_avg_pool output", output.len(), batch * CHANNELS);
    let scale = T::ONE / T::from_f64(inner as f64);
    for (y, plane) in output.iter_mut().zip(input.chunks_exact(inner)) {
        *y = plane.iter().copied().sum::<T>() * scale;
    }
}

/// Gradient of [`global_avg_pool_forward`].
///
/// # Panics
/// If the lengths do not match.
pub fn global_avg_pool_backward<T: Float, const CHANNELS: usize>(
    grad_input: &mut [T],
    accum: Accum,
    grad_output: &[T],
    inner: usize,
    batch: usize,
) {
    check_len(
        "global_avg_pool grad_input",
        grad_input.len(),
        batch * CHANNELS * inner,
    );
    check_len(
        "global_avg_pool grad_output",
        grad_output.len(),
        batch * CHANNELS,
    );
    let scale = T::ONE / T::from_f64(inner as f64);
    for (plane, &g) in grad_input.chunks_exact_mut(inner).zip(grad_output) {
        for v in plane {
            super::store(v, g * scale, accum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn shape(
        c: usize,
        hw: (usize, usize),
        k: (usize, usize),
        st: (usize, usize),
        pad: (usize, usize),
    ) -> Conv2dShape {
        let out = |i: usize, k: usize, s: usize, p: usize| (i + 2 * p - k) / s + 1;
        Conv2dShape {
            in_channels: c,
            in_size: hw,
            out_channels: c,
            kernel: k,
            stride: st,
            padding: pad,
            dilation: (1, 1),
            out_size: (out(hw.0, k.0, st.0, pad.0), out(hw.1, k.1, st.1, pad.1)),
        }
    }

    #[test]
    fn max_pool_picks_the_largest_and_routes_its_gradient() {
        let s = shape(1, (4, 4), (2, 2), (2, 2), (0, 0));
        let x: Vec<f64> = (0..16).map(f64::from).collect();
        let mut y = vec![0.0; 4];
        let mut arg = vec![0.0; 4];
        max_pool2d_forward(&s, &mut y, &mut arg, &x, 1);
        assert_eq!(y, [5.0, 7.0, 13.0, 15.0]);
        let mut gx = vec![9.0; 16];
        max_pool2d_backward(&s, &mut gx, Accum::Replace, &arg, &[1.0, 2.0, 3.0, 4.0], 1);
        assert_eq!(gx[5], 1.0);
        assert_eq!(gx[15], 4.0);
        assert_eq!(gx.iter().sum::<f64>(), 10.0);
    }

    #[test]
    fn the_2x2_path_equals_the_general_ones_ties_included() {
        // Odd sizes drop the last row and column (floor); 26 gives output rows of 13
        // (one vector block, two loads per input row), 70 rows of 35 (three blocks).
        for size in [11, 26, 40, 70] {
            check_2x2(size);
        }
    }

    fn check_2x2(size: usize) {
        // Values on a coarse grid, so windows hold ties, which go to the first tap in
        // row-major order.
        let s = shape(3, (size, size), (2, 2), (2, 2), (0, 0));
        let x: Vec<f32> = values(3 * size * size, 9)
            .iter()
            .map(|v| (v * 2.0).round() as f32)
            .collect();
        let n = s.output_len();
        let run = |pool: fn(&Conv2dShape, &mut [f32], &mut [f32], &[f32])| {
            let (mut y, mut arg) = (vec![0.0; n], vec![0.0; n]);
            pool(&s, &mut y, &mut arg, &x);
            (y, arg)
        };
        let fast = run(max_pool_2x2);
        assert_eq!(fast, run(max_pool_unpadded), "{size}");
        assert_eq!(fast, run(max_pool_padded), "{size}");
        let (y, arg) = fast;
        let (oh, ow) = s.out_size;
        let mut tied = 0;
        for (o, (&v, &a)) in y.iter().zip(&arg).enumerate() {
            assert_eq!(x[a as usize], v);
            let (c, oy, ox) = (o / (oh * ow), o / ow % oh, o % ow);
            let top = (c * size + 2 * oy) * size + 2 * ox;
            let taps = [top, top + 1, top + size, top + size + 1];
            tied += usize::from(taps.iter().filter(|&&t| x[t] == v).count() > 1);
        }
        assert!(tied > 5, "only {tied} windows with a tied maximum");
    }

    #[test]
    fn the_tiled_2x2_backward_routes_like_the_scatter() {
        // Inputs tiled exactly by 2x2 windows: backward writes every input once.
        // Rows of 13 outputs (one vector block) and of 20 (two).
        for size in [26, 40] {
            let s = shape(3, (size, size), (2, 2), (2, 2), (0, 0));
            let batch = 2;
            let x: Vec<f32> = values(batch * s.input_len(), 10)
                .iter()
                .map(|v| (v * 2.0).round() as f32)
                .collect();
            let n = batch * s.output_len();
            let (mut y, mut arg) = (vec![0.0; n], vec![0.0; n]);
            max_pool2d_forward(&s, &mut y, &mut arg, &x, batch);
            let g: Vec<f32> = values(n, 11).iter().map(|&v| v as f32).collect();
            let before: Vec<f32> = values(x.len(), 12).iter().map(|&v| v as f32).collect();
            for accum in [Accum::Replace, Accum::Add] {
                let mut expected = match accum {
                    Accum::Replace => vec![0.0; x.len()],
                    Accum::Add => before.clone(),
                };
                for (o, (&a, &gv)) in arg.iter().zip(&g).enumerate() {
                    expected[o / s.output_len() * s.input_len() + a as usize] += gv;
                }
                let mut gi = before.clone();
                max_pool2d_backward(&s, &mut gi, accum, &arg, &g, batch);
                assert_eq!(gi, expected, "{size} {accum:?}");
            }
        }
    }

    #[test]
    #[cfg_attr(
        not(kiln_host_avx512),
        ignore = "no AVX-512F on this machine: the 2x2 pooling rows in f32 are AVX-512 only and cannot run here"
    )]
    fn the_avx512_2x2_pool_matches_the_generic_f64_path_on_random_sizes() {
        #[cfg(target_arch = "x86_64")]
        assert!(crate::simd::has_avx512());
        // Widths straddling one, two and four 16-lane blocks of output, random ones,
        // odd and even (odd drops the last row and column); values on a coarse grid,
        // so windows hold ties, which both paths give to the first tap.
        let widths = sizes(&[32, 64, 128], 10, 150, 21);
        for (i, w) in widths.into_iter().filter(|&w| w >= 2).enumerate() {
            let h = 2 + i % 9;
            let s = shape(2, (h, w), (2, 2), (2, 2), (0, 0));
            let batch = 2;
            let x: Vec<f64> = values(batch * s.input_len(), 30 + i as u64)
                .iter()
                .map(|v| (v * 3.0).round())
                .collect();
            let n = batch * s.output_len();
            let narrow: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let (mut y32, mut arg32) = (vec![0.0f32; n], vec![0.0f32; n]);
            max_pool2d_forward(&s, &mut y32, &mut arg32, &narrow, batch);
            let (mut y64, mut arg64) = (vec![0.0f64; n], vec![0.0f64; n]);
            max_pool2d_forward(&s, &mut y64, &mut arg64, &x, batch);
            let widen = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
            assert_eq!(widen(&y32), y64, "{h} x {w}");
            assert_eq!(widen(&arg32), arg64, "{h} x {w}");
            // The backward pass, tiled (even sizes) or scattered, both accumulations.
            let g: Vec<f64> = values(n, 40 + i as u64);
            let before: Vec<f64> = values(x.len(), 50 + i as u64);
            for accum in [Accum::Replace, Accum::Add] {
                let mut gi64 = before.clone();
                max_pool2d_backward(&s, &mut gi64, accum, &arg64, &g, batch);
                let mut gi32: Vec<f32> = before.iter().map(|&v| v as f32).collect();
                let g32: Vec<f32> = g.iter().map(|&v| v as f32).collect();
                max_pool2d_backward(&s, &mut gi32, accum, &arg32, &g32, batch);
                assert_close(&widen(&gi32), &gi64, 1e-6);
            }
        }
    }

    #[test]
    fn max_pool_split_across_threads_gives_the_per_sample_result() {
        // Large enough that both passes split the batch across rayon's threads.
        let s = shape(4, (20, 20), (2, 2), (2, 2), (0, 0));
        let batch = 400;
        assert!(
            (s.input_len() + s.output_len() * 4) as f64 * MEMORY_BOUND_WEIGHT * batch as f64
                >= super::super::PARALLEL_MIN_FLOPS
        );
        let x = values(batch * s.input_len(), 21);
        let g = values(batch * s.output_len(), 22);
        let (mut y, mut arg) = (vec![0.0; g.len()], vec![0.0; g.len()]);
        max_pool2d_forward(&s, &mut y, &mut arg, &x, batch);
        let mut gx = vec![1.0; x.len()];
        max_pool2d_backward(&s, &mut gx, Accum::Add, &arg, &g, batch);
        for n in 0..batch {
            let (xi, yi) = (n * s.input_len(), n * s.output_len());
            let (mut y1, mut arg1) = (vec![0.0; s.output_len()], vec![0.0; s.output_len()]);
            max_pool2d_forward(&s, &mut y1, &mut arg1, &x[xi..][..s.input_len()], 1);
            assert_eq!(&y[yi..][..s.output_len()], &y1[..]);
            assert_eq!(&arg[yi..][..s.output_len()], &arg1[..]);
            let mut gx1 = vec![1.0; s.input_len()];
            max_pool2d_backward(
                &s,
                &mut gx1,
                Accum::Add,
                &arg1,
                &g[yi..][..s.output_len()],
                1,
            );
            assert_eq!(&gx[xi..][..s.input_len()], &gx1[..]);
        }
    }

    #[test]
    fn pools_match_finite_differences() {
        for s in [
            shape(2, (5, 5), (2, 2), (2, 2), (0, 0)),
            shape(3, (6, 7), (3, 2), (2, 1), (1, 1)),
            shape(1, (4, 4), (3, 3), (1, 1), (1, 1)),
            // Unpadded but overlapping, with unequal strides: the direct-indexing path.
            shape(2, (7, 6), (3, 2), (2, 1), (0, 0)),
        ] {
            let batch = 2;
            // Distinct values keep the max away from ties, where it is not differentiable.
            let x: Vec<f64> = values(batch * s.input_len(), 11)
                .iter()
                .enumerate()
                .map(|(i, v)| v + i as f64 * 1e-3)
                .collect();
            let c = values(batch * s.output_len(), 12);
            let max_loss = |x: &[f64]| {
                let mut y = vec![0.0; c.len()];
                let mut arg = vec![0.0; c.len()];
                max_pool2d_forward(&s, &mut y, &mut arg, x, batch);
                dot(&c, &y)
            };
            let mut y = vec![0.0; c.len()];
            let mut arg = vec![0.0; c.len()];
            max_pool2d_forward(&s, &mut y, &mut arg, &x, batch);
            let mut gx = vec![0.0; x.len()];
            max_pool2d_backward(&s, &mut gx, Accum::Replace, &arg, &c, batch);
            assert_close(&gx, &numeric_grad(&x, 1e-7, max_loss), 1e-7);

            let avg_loss = |x: &[f64]| {
                let mut y = vec![0.0; c.len()];
                avg_pool2d_forward(&s, &mut y, x, batch);
                dot(&c, &y)
            };
            avg_pool2d_backward(&s, &mut gx, Accum::Replace, &c, batch);
            assert_close(&gx, &numeric_grad(&x, 1e-6, avg_loss), 1e-8);
        }
    }

    #[test]
    fn global_average_matches_finite_differences() {
        let x = values(2 * 3 * 10, 13);
        let c = values(2 * 3, 14);
        let loss = |x: &[f64]| {
            let mut y = vec![0.0; 6];
            global_avg_pool_forward::<f64, 3>(&mut y, x, 10, 2);
            dot(&c, &y)
        };
        let mut gx = vec![0.0; x.len()];
        global_avg_pool_backward::<f64, 3>(&mut gx, Accum::Replace, &c, 10, 2);
        assert_close(&gx, &numeric_grad(&x, 1e-6, loss), 1e-8);
    }
}
