//! Direct convolutions: "same" convolutions of stride 1 computed from a zero-padded copy
//! of their input, without a column matrix.
//!
//! For a convolution that [rebuilds its columns](Conv2dShape::rebuilds_columns) each tap's
//! row of the column matrix is the input plane shifted. Padded by the convolution's
//! padding, the plane needs no shift to be cut out: output position `(oy, ox)` of tap
//! `(c, i, j)` reads `padded[c][oy + i][ox + j]`, and sixteen neighbouring output
//! positions of a row read sixteen neighbouring values. So the kernel here reads the
//! padded planes where im2col would have copied them, in the register tile of the
//! recurrent layers' AVX-512 product (`panels.rs`): eight output channels × two blocks
//! of sixteen positions, sixteen accumulators, the eight weights broadcast and the two
//! blocks loaded at each of the `K = in_channels · kh · kw` taps. The padded input is
//! `in_channels · (in_h + 2 pad) · (in_w + 2 pad)` values, about a ninth of the column
//! matrix of a 3x3 convolution, and the padded copy replaces im2col.
//!
//! The input gradient of such a convolution is the same product the other way round:
//! `grad_x[c][y][x] = Σ W[o][c][i][j] · g[o][y + pad − i][x + pad − j]`, a convolution of
//! the output gradient padded by `kernel − 1 − pad` with the weights flipped in both
//! taps and their channel axes swapped ([`flip`]). That replaces the `Wᵀ · g` GEMM and
//! col2im, which added the column gradient back a tap at a time.
//!
//! The weight gradient `Σ g[o][oy][ox] · padded[c][oy + i][ox + j]` is a sum over the
//! positions for every weight: kept in sixteen lanes of registers for a tile of output
//! channels and a row of taps, and reduced across the lanes once a sample
//! ([`weight_gradient`]). With these three no column matrix is built.
//!
//! It runs where it applies ([`applies`]): f32 on a processor with AVX-512F, stride and
//! dilation 1, padding at most `kernel − 1`, output rows a multiple of 16 wide and at
//! most [`MAX_KERNEL_WIDTH`] taps a row: ResNet-20's 3x3 convolutions on 32 x 32 and
//! 16 x 16 planes.
//!
//! # AVX2
//!
//! The kernels are written once over a vector type (`x86::Vector`) and run at the
//! widest the processor has ([`width`]): AVX-512's 16 lanes, or AVX2's 8 on a processor
//! without AVX-512 (or under `KILN_SIMD=avx2`). Blocks of positions and vectors of
//! channels are then 8 wide (ResNet-20's 8 x 8 planes take the rows kernels, a block a
//! row), and the tiles are cut for 16 registers instead of 32: 6 output channels × 2
//! blocks, 6 positions or taps × 2 vectors of channels, `rows · kw + rows + 1 ≤ 16`
//! for the weight gradient ([`x86::Vector`]'s constants).
//!
//! # At a stride
//!
//! A convolution that keeps its columns (a stride above 1, or "valid" rows narrower
//! than the input's: [`strided_apply`]) takes the channels-in-lanes forward pass and
//! weight gradient with the output positions' walk stepping by the stride, and reads
//! its input in place where there is no padding. Its input gradient stays `Wᵀ · g` and
//! col2im: at a stride each input position takes a different subset of the taps.
//!
//! # Channels in lanes
//!
//! Rows narrower than a block (ResNet-20's 8 x 8 planes) would split a block over two
//! output rows. There the vectors run over channels instead ([`lanes_apply`]: input and
//! output channels in whole vectors of 16): the forward pass and the input gradient
//! take tiles of 8 output positions × 32 output channels, each position's input value
//! at a tap broadcast against that tap's row of the transposed weights (`k ×
//! out_channels`, written once a pass), and write the sums out channel by channel; the
//! weight gradient takes tiles of 4 taps × 64 output channels, summed over the
//! positions against the transposed output gradient, into the weight gradient held `k
//! × out_channels` (the convolution's `transposed` layout), with no reduction across
//! lanes. A copy that let blocks of 16 positions span two output rows was tried first
//! for the forward pass and input gradient, with im2col and faer kept for the weight
//! gradient, and left the step unchanged. docs/design.md, "Convolutions", has the
//! measurements.

use std::any::TypeId;

use faer::Accum;
use kiln_shapes::Conv2dShape;

#[cfg(target_arch = "x86_64")]
use super::{as_f32, as_f32_mut};
use crate::Float;

/// The f32 lanes of the vectors the kernels run with on this processor: 16 with
/// AVX-512F, 8 with AVX2 and FMA, none without (or under `KILN_SIMD=baseline`).
pub(crate) fn width() -> Option<usize> {
    if crate::simd::has_avx512() {
        Some(16)
    } else if crate::simd::has_avx2_fma() {
        Some(8)
    } else {
        None
    }
}

/// Runs `x86::$kernel::<V>($args)` with `V` the vector of [`width`] (which must be
/// `Some`), compiled for its instructions, then clears the upper vector state.
#[cfg(target_arch = "x86_64")]
macro_rules! at_width {
    ($kernel:ident($($arg:expr),* $(,)?)) => {{
        use std::arch::x86_64::{__m256, __m512};
        if width() == Some(16) {
            crate::simd::with_avx512(
                #[inline(always)]
                || x86::$kernel::<__m512>($($arg),*),
            )
        } else {
            crate::simd::with_avx2(
                #[inline(always)]
                || x86::$kernel::<__m256>($($arg),*),
            )
        }
        crate::simd::clear_upper_vector_state();
    }};
}

/// Widest kernel [`weight_gradient`] takes: a tile holds one row of taps.
const MAX_KERNEL_WIDTH: usize = 8;

/// Which kernels take a convolution's three products in `T` on this processor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Path {
    /// [`forward`], [`weight_gradient`], [`input_gradient`] ([`applies`]).
    Rows,
    /// [`lanes_forward`], [`lanes_weight_gradient`], [`lanes_input_gradient`]
    /// ([`lanes_apply`]).
    Lanes,
    /// [`lanes_forward`] and [`lanes_weight_gradient`] at the convolution's stride;
    /// the input gradient as for [`Path::Columns`] ([`strided_apply`]).
    Strided,
    /// im2col (or the thin and sparse kernels) and faer, in `conv.rs`.
    Columns,
}

/// The [`Path`] of `s` in `T` on this processor, for a batch of `batch` samples split
/// after `half` (`half == batch`: not split).
pub(crate) fn path<T: Float>(s: &Conv2dShape, half: usize, batch: usize) -> Path {
    if applies::<T>(s) {
        Path::Rows
    } else if lanes_apply::<T>(s) {
        Path::Lanes
    } else if strided_apply::<T>(s, half, batch) {
        Path::Strided
    } else {
        Path::Columns
    }
}

/// Whether [`forward`], [`input_gradient`] and [`weight_gradient`] take the
/// convolution `s` in `T` on this processor, their padded copies fitting in one
/// sample's columns.
pub(crate) fn applies<T: Float>(s: &Conv2dShape) -> bool {
    stride_one_same::<T>(s)
        && width().is_some_and(|lanes| s.out_size.1.is_multiple_of(lanes))
        && s.kernel.1 <= MAX_KERNEL_WIDTH
        && padded_input_len(s).max(padded_grad_len(s)) <= s.cols_len()
}

/// What both direct paths need: f32 on a processor with AVX-512F, a convolution that
/// [rebuilds its columns](Conv2dShape::rebuilds_columns) (stride 1, "same" width),
/// dilation 1 and padding below the kernel (so that the input gradient's padding,
/// `kernel − 1 − pad`, exists).
fn stride_one_same<T: Float>(s: &Conv2dShape) -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>()
        && s.rebuilds_columns()
        && s.dilation == (1, 1)
        && s.padding.0 < s.kernel.0
        && s.padding.1 < s.kernel.1
        && width().is_some()
}

/// The padded input of `s`: `(rows, columns)` of a plane.
fn padded_input(s: &Conv2dShape) -> (usize, usize) {
    (s.in_size.0 + 2 * s.padding.0, s.in_size.1 + 2 * s.padding.1)
}

/// How far the output gradient is padded for [`input_gradient`]: `kernel − 1 − pad`.
fn grad_padding(s: &Conv2dShape) -> (usize, usize) {
    (s.kernel.0 - 1 - s.padding.0, s.kernel.1 - 1 - s.padding.1)
}

/// The padded output gradient of `s`: `(rows, columns)` of a plane.
fn padded_grad(s: &Conv2dShape) -> (usize, usize) {
    let (py, px) = grad_padding(s);
    (s.out_size.0 + 2 * py, s.out_size.1 + 2 * px)
}

/// Values of one sample's padded input.
pub(crate) fn padded_input_len(s: &Conv2dShape) -> usize {
    let (h, w) = padded_input(s);
    s.in_channels * h * w
}

/// Values of scratch [`pad_input`] takes: none without padding, where the input is
/// read as it lies.
fn input_copy_len(s: &Conv2dShape) -> usize {
    if s.padding == (0, 0) {
        0
    } else {
        padded_input_len(s)
    }
}

/// Values of one sample's padded output gradient.
pub(crate) fn padded_grad_len(s: &Conv2dShape) -> usize {
    let (h, w) = padded_grad(s);
    s.out_channels * h * w
}

/// Copies `channels` planes of `size` from `src` into `dst`, each inside a border of
/// `pad` zeros (`dst`: `channels` planes of `size + 2 pad`).
///
/// The whole copy is zeroed at once and each row then copied in blocks of sixteen
/// (then of eight, then a value at a time), so that the copies compile to vector moves
/// in place. With a `memcpy` and two `memset`s
/// per row of 16 or 32 values the copies took 6 % of ResNet-20's samples in `perf`,
/// 4.8 % in those calls. Zeroing the border alone (81a41b2: the rows above, then after
/// each row the run to the next) did not pay, though zeroing the whole copy was 1.0 %
/// of the samples: ResNet-20 0.990 (0.955–1.015; `commits.py 02edb19 81a41b2 --rounds
/// 10 --only resnet20`). Nor did reading the input as it lies, the padding as the
/// masked-out lanes of masked loads (3a75375, reverted in 942861a; the sums equal to the
/// copy's bit for bit): with the copies and their zeroing gone from the profile, the
/// step ran 0.81–0.87 times as fast. The likely reason, not measured (this guest has no
/// cache counters): 32 x 32 planes of f32 lie 4 KiB apart, so a tap's loads over the
/// channels fall in one set of the L1 cache, where the copy's 34 x 34 planes do not.
fn pad_planes<T: Float>(
    dst: &mut [T],
    src: &[T],
    channels: usize,
    size: (usize, usize),
    pad: (usize, usize),
) {
    let (h, w) = size;
    let width = w + 2 * pad.1;
    let plane = (h + 2 * pad.0) * width;
    let dst = &mut dst[..channels * plane];
    dst.fill(T::ZERO);
    crate::simd::vectorized(
        #[inline(always)]
        || {
            for (dst, src) in dst.chunks_exact_mut(plane).zip(src.chunks_exact(h * w)) {
                let rows = dst[pad.0 * width + pad.1..].chunks_mut(width);
                for (line, row) in rows.zip(src.chunks_exact(w)) {
                    let (line, row) = (&mut line[..w], row);
                    let whole = w - w % 16;
                    copy_blocks::<T, 16>(&mut line[..whole], &row[..whole]);
                    let (line, row) = (&mut line[whole..], &row[whole..]);
                    let half = row.len() - row.len() % 8;
                    copy_blocks::<T, 8>(&mut line[..half], &row[..half]);
                    for (d, &v) in line[half..].iter_mut().zip(&row[half..]) {
                        *d = v;
                    }
                }
            }
        },
    );
}

/// The input of one sample of `s` padded into `scratch` (the input itself without
/// padding), and what reading it takes.
fn pad_input<'a, T: Float>(
    s: &Conv2dShape,
    scratch: &'a mut [T],
    x: &'a [T],
) -> (&'a [T], Geometry) {
    let geometry = Geometry {
        channels: s.in_channels,
        kernel: s.kernel,
        stride: s.stride,
        padded: padded_input(s),
        out: s.out_size,
    };
    if s.padding == (0, 0) {
        return (x, geometry);
    }
    let padded = &mut scratch[..padded_input_len(s)];
    pad_planes(padded, x, s.in_channels, s.in_size, s.padding);
    (padded, geometry)
}

/// The output gradient of one sample of `s` padded by `kernel − 1 − pad` into
/// `scratch`, and what reading it takes: the input gradient is its convolution with
/// the [flipped](flip) weights.
fn pad_grad<'a, T: Float>(s: &Conv2dShape, scratch: &'a mut [T], g: &[T]) -> (&'a [T], Geometry) {
    let padded = &mut scratch[..padded_grad_len(s)];
    pad_planes(padded, g, s.out_channels, s.out_size, grad_padding(s));
    let geometry = Geometry {
        channels: s.out_channels,
        kernel: s.kernel,
        stride: (1, 1),
        padded: padded_grad(s),
        out: s.in_size,
    };
    (padded, geometry)
}

/// `dst = src` in blocks of `N` values (both a multiple of `N` long).
#[inline(always)]
fn copy_blocks<T: Float, const N: usize>(dst: &mut [T], src: &[T]) {
    for (d, s) in dst.chunks_exact_mut(N).zip(src.chunks_exact(N)) {
        let s: &[T; N] = s.try_into().expect("a block");
        let d: &mut [T; N] = d.try_into().expect("a block");
        *d = *s;
    }
}

/// `y = conv(x, weight)` for one sample of `s` ([`applies`] must hold), with
/// `scratch` (at least [`padded_input_len`] values) for the padded input.
pub(crate) fn forward<T: Float>(
    s: &Conv2dShape,
    y: &mut [T],
    scratch: &mut [T],
    x: &[T],
    weight: &[T],
) {
    let (padded, geometry) = pad_input(s, scratch, x);
    convolve(y, Accum::Replace, weight, padded, geometry);
}

/// The weights of the input gradient ([`input_gradient`], [`lanes_input_gradient`]):
/// `weight[o][c][kh − 1 − i][kw − 1 − j]` at `flipped[c][(o, i, j)]`, or, `transposed`
/// (the channels-in-lanes layout), at `flipped[(o, i, j)][c]`.
pub(crate) fn flip<T: Float>(s: &Conv2dShape, flipped: &mut [T], weight: &[T], transposed: bool) {
    let (kh, kw) = s.kernel;
    let (ci, co) = (s.in_channels, s.out_channels);
    assert!(flipped.len() == co * s.k() && weight.len() == co * s.k());
    for o in 0..co {
        for c in 0..ci {
            for i in 0..kh {
                for j in 0..kw {
                    let tap = (o * kh + i) * kw + j;
                    let at = if transposed {
                        tap * ci + c
                    } else {
                        c * co * kh * kw + tap
                    };
                    flipped[at] = weight[((o * ci + c) * kh + kh - 1 - i) * kw + kw - 1 - j];
                }
            }
        }
    }
}

/// `grad_x (=|+=) convᵀ(g, weight)` for one sample of `s` ([`applies`] must hold), from
/// the [flipped](flip) weights, with `scratch` (at least [`padded_grad_len`] values) for
/// the padded gradient.
pub(crate) fn input_gradient<T: Float>(
    s: &Conv2dShape,
    grad_x: &mut [T],
    accum: Accum,
    scratch: &mut [T],
    g: &[T],
    flipped: &[T],
) {
    let (padded, geometry) = pad_grad(s, scratch, g);
    convolve(grad_x, accum, flipped, padded, geometry);
}

/// `grad_w (=|+=) Σ_{oy,ox} g[o][oy][ox] · x[c][oy + i][ox + j]` for one sample of `s`
/// ([`applies`] must hold): the weight gradient from the output gradient `g` and the
/// input `x`, padded into `scratch` (at least [`padded_input_len`] values).
pub(crate) fn weight_gradient<T: Float>(
    s: &Conv2dShape,
    grad_w: &mut [T],
    accum: Accum,
    scratch: &mut [T],
    x: &[T],
    g: &[T],
) {
    let (padded, geometry) = pad_input(s, scratch, x);
    let (oh, ow) = s.out_size;
    assert!(
        TypeId::of::<T>() == TypeId::of::<f32>()
            && s.kernel.1 <= MAX_KERNEL_WIDTH
            && width().is_some_and(|lanes| ow.is_multiple_of(lanes))
            && grad_w.len() == s.out_channels * s.k()
            && g.len() == s.out_channels * oh * ow,
        "direct weight gradient: the buffers do not match the geometry"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `T` is `f32`, the processor has the vectors of `width`, and the lengths
    // match the geometry (checked above, the padded input by its construction).
    unsafe {
        let add = accum == Accum::Add;
        let (grad_w, g, padded) = (as_f32_mut(grad_w), as_f32(g), as_f32(padded));
        at_width!(weight_gradient(grad_w, add, g, padded, geometry));
    }
}

/// The shape of one [`convolve`] or [`lanes_convolve`]: input channels, taps, stride
/// (1 for [`convolve`]), the padded input planes' size and the output planes' size (at
/// stride 1 `padded − kernel + 1`, a multiple of the vector wide for [`convolve`]).
#[derive(Clone, Copy)]
struct Geometry {
    channels: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padded: (usize, usize),
    out: (usize, usize),
}

impl Geometry {
    /// The taps `(c, i, j)` over the padded planes.
    fn taps(&self) -> Walk {
        let (ph, pw) = self.padded;
        Walk {
            n: (self.channels, self.kernel.0, self.kernel.1),
            stride: (ph * pw, pw, 1),
        }
    }

    /// The output positions `(oy, ox)` inside a padded plane, at tap `(0, 0)`.
    fn positions(&self) -> Walk {
        Walk {
            n: (1, self.out.0, self.out.1),
            stride: (0, self.stride.0 * self.padded.1, self.stride.1),
        }
    }
}

/// `y (=|+=) Σ_{c,i,j} w[o][c][i][j] · x[c][oy + i][ox + j]` for every output channel
/// `o` (`y`: `w.len() / K` planes of `g.out`, `x`: `g.channels` padded planes).
fn convolve<T: Float>(y: &mut [T], accum: Accum, w: &[T], x: &[T], g: Geometry) {
    let k = g.channels * g.kernel.0 * g.kernel.1;
    let (oh, ow) = g.out;
    let (ph, pw) = g.padded;
    assert!(
        TypeId::of::<T>() == TypeId::of::<f32>()
            && width().is_some_and(|lanes| ow.is_multiple_of(lanes))
            && g.stride == (1, 1)
            && ph + 1 == oh + g.kernel.0
            && pw + 1 == ow + g.kernel.1
            && w.len().is_multiple_of(k)
            && y.len() == w.len() / k * oh * ow
            && x.len() == g.channels * ph * pw,
        "direct convolution: the buffers do not match the geometry"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `T` is `f32`, the processor has the vectors of `width`, and the lengths
    // were checked against the geometry above.
    unsafe {
        let (y, add, w, x) = (as_f32_mut(y), accum == Accum::Add, as_f32(w), as_f32(x));
        at_width!(convolve(y, add, w, x, g));
    }
}

/// Whether the channels-in-lanes kernels ([`lanes_forward`], [`lanes_weight_gradient`],
/// [`lanes_input_gradient`]) take `s` in `T` on this processor: a "same" convolution of
/// stride 1 as for [`applies`] whose rows are *not* a multiple of 16 wide (ResNet-20's
/// 8 x 8 planes), with input and output channels in whole vectors of 16, and room in
/// the columns for the copies: two padded inputs and the transposed weights in the
/// forward pass (both halves' columns), a padded input and the transposed output
/// gradient, or the padded output gradient, in the backward pass (one half's).
pub(crate) fn lanes_apply<T: Float>(s: &Conv2dShape) -> bool {
    let (p, co, k) = (s.p(), s.out_channels, s.k());
    let Some(lanes) = width() else {
        return false;
    };
    stride_one_same::<T>(s)
        && !s.out_size.1.is_multiple_of(lanes)
        && s.in_channels.is_multiple_of(lanes)
        && co.is_multiple_of(lanes)
        && 2 * padded_input_len(s) + co * k <= s.cols_scratch_len()
        && (padded_input_len(s) + p * co).max(padded_grad_len(s)) <= s.cols_len()
}

/// Splits the forward pass's columns (`s.cols_scratch_len()` values) for the
/// channels-in-lanes path: each half's padded input, and the transposed weights
/// (`k × out_channels`), written here from `weight`.
pub(crate) fn lanes_split<'a, T: Float>(
    s: &Conv2dShape,
    cols: &'a mut [T],
    weight: &[T],
) -> (&'a mut [T], &'a mut [T], &'a [T]) {
    let len = padded_input_len(s);
    let (pads, rest) = cols.split_at_mut(2 * len);
    let transposed = &mut rest[..s.out_channels * s.k()];
    super::sparse::transpose(transposed, weight, s.out_channels, s.k());
    let (c0, c1) = pads.split_at_mut(len);
    (c0, c1, transposed)
}

/// Whether [`lanes_forward`] and [`lanes_weight_gradient`] take the convolution `s` in
/// `T` on this processor at its stride, for a batch of `batch` split after `half`
/// ([`Path::Strided`]): f32 with AVX2 or AVX-512, a convolution that keeps its columns
/// (a stride above 1, or rows narrower than the input's) with more than one tap,
/// dilation 1, input and output channels in whole vectors, and room: in the forward pass the first half's columns
/// hold the transposed weights and a padded input, the second half's a padded input;
/// in the backward pass each half's columns (none kept from the forward pass) hold a
/// padded input and the transposed output gradient. The input gradient stays `Wᵀ · g`
/// and col2im: at a stride its taps scatter. A 1x1 kernel keeps its columns: with no
/// taps to share, its im2col is a strided copy, and the channels-in-lanes forward pass
/// of ResNet-20's projections ran at 0.7–0.8 times the speed of im2col and faer.
pub(crate) fn strided_apply<T: Float>(s: &Conv2dShape, half: usize, batch: usize) -> bool {
    let Some(lanes) = width() else {
        return false;
    };
    let (p, co, k, cols) = (s.p(), s.out_channels, s.k(), s.cols_len());
    let copy = input_copy_len(s);
    let second = batch - half;
    let least = if second == 0 { half } else { half.min(second) };
    TypeId::of::<T>() == TypeId::of::<f32>()
        && !s.rebuilds_columns()
        && s.kernel != (1, 1)
        && s.dilation == (1, 1)
        && s.in_channels.is_multiple_of(lanes)
        && co.is_multiple_of(lanes)
        && co * k + copy <= half * cols
        && (second == 0 || copy <= second * cols)
        && copy + p * co <= least * cols
}

/// Splits the forward pass's columns of [`Path::Strided`] (`batch` samples' columns,
/// the first `half` samples' for the first half): the transposed weights (`k ×
/// out_channels`, written here from `weight`) at the start of the first half's, each
/// half's scratch after.
pub(crate) fn strided_split<'a, T: Float>(
    s: &Conv2dShape,
    cols: &'a mut [T],
    half: usize,
    weight: &[T],
) -> (&'a mut [T], &'a mut [T], &'a [T]) {
    let (first, second) = cols.split_at_mut(half * s.cols_len());
    let (transposed, first) = first.split_at_mut(s.out_channels * s.k());
    super::sparse::transpose(transposed, weight, s.out_channels, s.k());
    (first, second, transposed)
}

/// `y = conv(x, weight)` for one sample of `s` ([`lanes_apply`], [`strided_apply`])
/// from the transposed weights of [`lanes_split`] or [`strided_split`], the padded
/// input in `scratch`.
pub(crate) fn lanes_forward<T: Float>(
    s: &Conv2dShape,
    y: &mut [T],
    scratch: &mut [T],
    x: &[T],
    transposed: &[T],
) {
    let (padded, geometry) = pad_input(s, scratch, x);
    lanes_convolve(y, Accum::Replace, transposed, padded, geometry);
}

/// `grad_wᵀ (=|+=) Σ_p x[c][p + tap] · g[o][p]` for one sample of `s`
/// ([`lanes_apply`], [`strided_apply`]; `p + tap` at the stride): the weight gradient as `k × out_channels`, from the output
/// gradient `g`, with `scratch` for the padded input and `gᵀ`.
pub(crate) fn lanes_weight_gradient<T: Float>(
    s: &Conv2dShape,
    grad_wt: &mut [T],
    accum: Accum,
    scratch: &mut [T],
    x: &[T],
    g: &[T],
) {
    let (p, co, k) = (s.p(), s.out_channels, s.k());
    let (scratch, rest) = scratch.split_at_mut(input_copy_len(s));
    let (padded, geometry) = pad_input(s, scratch, x);
    let gt = &mut rest[..p * co];
    super::sparse::transpose(gt, g, co, p);
    assert!(
        TypeId::of::<T>() == TypeId::of::<f32>()
            && grad_wt.len() == k * co
            && width().is_some_and(|lanes| co.is_multiple_of(lanes)),
        "lanes weight gradient: the buffers do not match the geometry"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `T` is `f32`, the processor has the vectors of `width`; every tap of
    // every position lies inside the padded input, `gt` is `p × co` and `grad_wt`
    // `k × co`.
    unsafe {
        let (grad_wt, add) = (as_f32_mut(grad_wt), accum == Accum::Add);
        let (padded, gt) = (as_f32(padded), as_f32(gt));
        let (positions, taps) = (geometry.positions(), geometry.taps());
        at_width!(lanes_weight_gradient(
            grad_wt, add, padded, gt, co, positions, taps
        ));
    }
}

/// `grad_x (=|+=) convᵀ(g, weight)` for one sample of `s` ([`lanes_apply`]), from the
/// weights [`flip`] transposed, with `scratch` for the padded output gradient.
pub(crate) fn lanes_input_gradient<T: Float>(
    s: &Conv2dShape,
    grad_x: &mut [T],
    accum: Accum,
    scratch: &mut [T],
    g: &[T],
    flipped: &[T],
) {
    let (padded, geometry) = pad_grad(s, scratch, g);
    lanes_convolve(grad_x, accum, flipped, padded, geometry);
}

/// A walk over `n.0 × n.1 × n.2` steps, step `(a, b, c)` at offset
/// `a · stride.0 + b · stride.1 + c · stride.2`: the taps of a convolution over its
/// padded input, or the output positions of a plane inside it.
#[derive(Clone, Copy)]
struct Walk {
    n: (usize, usize, usize),
    stride: (usize, usize, usize),
}

impl Walk {
    fn len(&self) -> usize {
        self.n.0 * self.n.1 * self.n.2
    }

    /// The offset of step `t`.
    fn offset(&self, t: usize) -> usize {
        let (c, rest) = (t / (self.n.1 * self.n.2), t % (self.n.1 * self.n.2));
        c * self.stride.0 + rest / self.n.2 * self.stride.1 + rest % self.n.2 * self.stride.2
    }
}

/// `y (=|+=) Σ_t wt[t][o] · x[position + tap t]` for every output channel `o` (`wt`:
/// a row of the channels for each tap, `y`: their planes of `g.out`).
fn lanes_convolve<T: Float>(y: &mut [T], accum: Accum, wt: &[T], x: &[T], g: Geometry) {
    let taps = g.taps();
    let k = taps.len();
    let (oh, ow) = g.out;
    let last = g.positions().offset(oh * ow - 1) + taps.offset(k - 1);
    assert!(
        TypeId::of::<T>() == TypeId::of::<f32>()
            && wt.len().is_multiple_of(k)
            && width().is_some_and(|lanes| (wt.len() / k).is_multiple_of(lanes))
            && y.len() == wt.len() / k * oh * ow
            && last < x.len(),
        "lanes convolution: the buffers do not match the geometry"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `T` is `f32`, the processor has the vectors of `width`; the last tap of
    // the last position lies inside `x` (checked above), `wt` holds `k` rows of the
    // channels.
    unsafe {
        let (y, add, wt, x) = (as_f32_mut(y), accum == Accum::Add, as_f32(wt), as_f32(x));
        at_width!(lanes_convolve(y, add, wt, x, g));
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Geometry, Walk};

    /// A vector of f32 the kernels are written over, with the tile shapes that fit its
    /// register file: AVX-512's 16 lanes (32 registers) or AVX2's 8 (16 registers).
    /// Every method must be called where the processor has the vector's instructions
    /// (inside [`crate::simd::with_width`]).
    pub(super) trait Vector: Copy {
        /// f32 values in a vector: output positions in a block of the rows kernels,
        /// channels in a vector of the channels-in-lanes kernels.
        const LANES: usize;
        /// Output channels in a tile of [`convolve`] (two blocks of positions wide).
        const ROWS: usize;
        /// Output positions in a tile of [`lanes_convolve`], and its vectors of channels.
        const POSITION_ROWS: usize;
        const POSITION_VECTORS: usize;
        /// Taps in a tile of [`lanes_weight_gradient`], and its vectors of channels.
        const TAP_ROWS: usize;
        const TAP_VECTORS: usize;

        unsafe fn zero() -> Self;
        unsafe fn load(at: *const f32) -> Self;
        unsafe fn splat(value: f32) -> Self;
        /// `a · b + acc`, rounded once.
        unsafe fn fmadd(a: Self, b: Self, acc: Self) -> Self;
        unsafe fn add(a: Self, b: Self) -> Self;
        unsafe fn store(at: *mut f32, value: Self);
        /// The sum of the lanes.
        unsafe fn sum(value: Self) -> f32;
        /// Output channels in a tile of [`weight_gradient`] for a kernel `kw` taps
        /// wide: its `rows · kw` sums, the `rows` loads of the output gradient and one
        /// of the input stay in registers.
        fn gradient_rows(kw: usize) -> usize;
    }

    impl Vector for __m512 {
        const LANES: usize = 16;
        // 8 × 2 sums, 2 loads and 8 broadcasts a tap.
        const ROWS: usize = 8;
        // 8 × 2 sums: each row of the transposed weights (read from the L2 cache)
        // serves eight positions.
        const POSITION_ROWS: usize = 8;
        const POSITION_VECTORS: usize = 2;
        // 4 × 4 sums, four loads and four broadcasts per sixteen FMAs.
        const TAP_ROWS: usize = 4;
        const TAP_VECTORS: usize = 4;

        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(at: *const f32) -> Self {
            unsafe { _mm512_loadu_ps(at) }
        }
        #[inline(always)]
        unsafe fn splat(value: f32) -> Self {
            unsafe { _mm512_set1_ps(value) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, acc: Self) -> Self {
            unsafe { _mm512_fmadd_ps(a, b, acc) }
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn store(at: *mut f32, value: Self) {
            unsafe { _mm512_storeu_ps(at, value) }
        }
        #[inline(always)]
        unsafe fn sum(value: Self) -> f32 {
            unsafe { _mm512_reduce_add_ps(value) }
        }
        /// At most twelve sums: with 3x3 taps the compiler kept the sums of eight
        /// output channels (24; ResNet-20's step then ran 18 % slower than with im2col
        /// and faer) or six (18) on the stack; four channels (12) stay in registers.
        fn gradient_rows(kw: usize) -> usize {
            [8, 6, 4, 3, 2, 2, 1, 1][kw.clamp(1, 8) - 1]
        }
    }

    impl Vector for __m256 {
        const LANES: usize = 8;
        // 6 × 2 sums, 2 loads and a broadcast: 15 of the 16 registers.
        const ROWS: usize = 6;
        const POSITION_ROWS: usize = 6;
        const POSITION_VECTORS: usize = 2;
        const TAP_ROWS: usize = 6;
        const TAP_VECTORS: usize = 2;

        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(at: *const f32) -> Self {
            unsafe { _mm256_loadu_ps(at) }
        }
        #[inline(always)]
        unsafe fn splat(value: f32) -> Self {
            unsafe { _mm256_set1_ps(value) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, acc: Self) -> Self {
            unsafe { _mm256_fmadd_ps(a, b, acc) }
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn store(at: *mut f32, value: Self) {
            unsafe { _mm256_storeu_ps(at, value) }
        }
        #[inline(always)]
        unsafe fn sum(value: Self) -> f32 {
            unsafe {
                let half = _mm_add_ps(
                    _mm256_castps256_ps128(value),
                    _mm256_extractf128_ps(value, 1),
                );
                let pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
                _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
            }
        }
        /// `rows · kw + rows + 1 ≤ 16` registers.
        fn gradient_rows(kw: usize) -> usize {
            [6, 4, 3, 2, 2, 2, 1, 1][kw.clamp(1, 8) - 1]
        }
    }

    /// Most rows of any tile: the length of the arrays of row pointers.
    const MAX_ROWS: usize = 8;

    /// Runs `$f::<V, R, Q>$args` for the run-time `($r, $q)`: `R` one of the listed
    /// rows (1 otherwise), `Q` one of the listed counts (1 otherwise).
    macro_rules! by_tile {
        ($V:ty, $r:expr, $q:expr, [$($R:literal)*], $qs:tt, $f:ident $args:tt) => {
            match $r {
                $( $R => by_tile!(@q $V, $q, $R, $qs, $f $args), )*
                _ => by_tile!(@q $V, $q, 1, $qs, $f $args),
            }
        };
        (@q $V:ty, $q:expr, $R:tt, [$($Q:literal)*], $f:ident $args:tt) => {
            match $q {
                $( $Q => $f::<$V, $R, $Q> $args, )*
                _ => $f::<$V, $R, 1> $args,
            }
        };
    }

    /// [`super::convolve`]: for each tile of `V::ROWS` output channels, every pair of
    /// blocks of `V::LANES` output positions (the last block alone if their count is
    /// odd), so that the tile's weights (`ROWS · K` values) stay in the L1 cache while
    /// the padded input streams past.
    ///
    /// # Safety
    /// The processor must have `V`'s instructions, and the lengths must match `g` as
    /// [`super::convolve`] checks.
    #[inline(always)]
    pub(super) unsafe fn convolve<V: Vector>(
        y: &mut [f32],
        add: bool,
        w: &[f32],
        x: &[f32],
        g: Geometry,
    ) {
        let k = g.channels * g.kernel.0 * g.kernel.1;
        let (oh, ow) = g.out;
        let plane = oh * ow;
        let rows = w.len() / k;
        let blocks = plane / V::LANES;
        let per_row = ow / V::LANES;
        // Block `b`'s first output position in a plane and its first input value.
        let at = |b: usize| {
            let (oy, ox) = (b / per_row, b % per_row * V::LANES);
            (oy * ow + ox, oy * g.padded.1 + ox)
        };
        let (yp, wp, xp) = (y.as_mut_ptr(), w.as_ptr(), x.as_ptr());
        let mut r = 0;
        while r < rows {
            let tile = (rows - r).min(V::ROWS);
            // SAFETY (all below): row `r + tile − 1` of `w` and plane `r + tile − 1` of
            // `y` exist, and every block's offsets stay inside a plane.
            let (yr, wr) = unsafe { (yp.add(r * plane), wp.add(r * k)) };
            let mut b = 0;
            while b < blocks {
                let (y0, x0) = at(b);
                let pair = b + 1 < blocks;
                let (y1, x1) = if pair { at(b + 1) } else { (y0, x0) };
                let ys = unsafe { [yr.add(y0), yr.add(y1)] };
                let xs = unsafe { [xp.add(x0), xp.add(x1)] };
                let blocks = if pair { 2 } else { 1 };
                unsafe {
                    if V::LANES == 16 {
                        by_tile!(V, tile, blocks, [8 7 6 5 4 3 2], [2],
                            tile_of(ys, plane, wr, k, xs, g, add))
                    } else {
                        by_tile!(V, tile, blocks, [6 5 4 3 2], [2],
                            tile_of(ys, plane, wr, k, xs, g, add))
                    }
                }
                b += 2;
            }
            r += tile;
        }
    }

    /// `R` output channels × `P` blocks of positions: block `q`'s outputs at
    /// `y[q] + r · y_stride`, its padded input from `x[q]`, the weights' rows `k` apart
    /// from `w`; the sums stay in `R · P` registers over every channel and tap.
    ///
    /// # Safety
    /// As [`convolve`], for these rows and blocks.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile_of<V: Vector, const R: usize, const P: usize>(
        y: [*mut f32; 2],
        y_stride: usize,
        w: *const f32,
        k: usize,
        x: [*const f32; 2],
        g: Geometry,
        add: bool,
    ) {
        let (kh, kw) = g.kernel;
        let plane = g.padded.0 * g.padded.1;
        // SAFETY: the caller's guarantees cover every offset read and written.
        unsafe {
            let mut acc = [[V::zero(); P]; R];
            let mut t = 0;
            for c in 0..g.channels {
                for i in 0..kh {
                    let line: [*const f32; P] =
                        std::array::from_fn(|q| x[q].add(c * plane + i * g.padded.1));
                    for j in 0..kw {
                        let xv: [V; P] = std::array::from_fn(|q| V::load(line[q].add(j)));
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let a = V::splat(*w.add(r * k + t));
                            for (acc, &xv) in acc.iter_mut().zip(&xv) {
                                *acc = V::fmadd(a, xv, *acc);
                            }
                        }
                        t += 1;
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (q, &acc) in acc.iter().enumerate() {
                    let at = y[q].add(r * y_stride);
                    let sum = if add { V::add(V::load(at), acc) } else { acc };
                    V::store(at, sum);
                }
            }
        }
    }

    /// [`super::weight_gradient`]: for each tile of output channels
    /// ([`Vector::gradient_rows`]) and each row of taps `(c, i)`, the `rows × kw` sums
    /// over every output position, a vector at a time in registers, reduced across the
    /// lanes at the end.
    ///
    /// # Safety
    /// The processor must have `V`'s instructions; `x` must be `g.channels` padded
    /// planes, `dy` `gw.len() / K` output planes of `g.out` (rows a multiple of
    /// `V::LANES` wide), `g.kernel.1` at most [`super::MAX_KERNEL_WIDTH`].
    #[inline(always)]
    pub(super) unsafe fn weight_gradient<V: Vector>(
        gw: &mut [f32],
        add: bool,
        dy: &[f32],
        x: &[f32],
        g: Geometry,
    ) {
        let kw = g.kernel.1;
        let rows = V::gradient_rows(kw);
        // SAFETY (all below): the caller's guarantees.
        macro_rules! by_width {
            ($([$kw:literal: $($r:literal)*])*) => {
                match (kw, rows) {
                    $($( ($kw, $r) => unsafe {
                        weight_gradient_of::<V, $r, $kw>(gw, add, dy, x, g)
                    }, )*)*
                    _ => unreachable!("no tile of {rows} rows for {kw} taps"),
                }
            };
        }
        by_width!([1: 8 6] [2: 6 4] [3: 4 3] [4: 3 2] [5: 2] [6: 2] [7: 1] [8: 1]);
    }

    /// [`weight_gradient`] for `kw = T`: tiles of `R` output channels, then the rest a
    /// channel at a time.
    ///
    /// # Safety
    /// As [`weight_gradient`].
    #[inline(always)]
    unsafe fn weight_gradient_of<V: Vector, const R: usize, const T: usize>(
        gw: &mut [f32],
        add: bool,
        dy: &[f32],
        x: &[f32],
        g: Geometry,
    ) {
        let rows = gw.len() / (g.channels * g.kernel.0 * g.kernel.1);
        let mut o = 0;
        while o + R <= rows {
            // SAFETY: rows `o..o + R` exist; the rest is the caller's guarantee.
            unsafe { channels_of::<V, R, T>(gw, add, dy, x, g, o) };
            o += R;
        }
        while o < rows {
            // SAFETY: as above, for row `o`.
            unsafe { channels_of::<V, 1, T>(gw, add, dy, x, g, o) };
            o += 1;
        }
    }

    /// The weight gradient's rows `o..o + R` (output channels), for `kw = T`.
    ///
    /// # Safety
    /// As [`weight_gradient`], and rows `o..o + R` must exist.
    #[inline(always)]
    unsafe fn channels_of<V: Vector, const R: usize, const T: usize>(
        gw: &mut [f32],
        add: bool,
        dy: &[f32],
        x: &[f32],
        g: Geometry,
        o: usize,
    ) {
        let kh = g.kernel.0;
        let k = g.channels * kh * T;
        let (oh, ow) = g.out;
        let (ph, pw) = g.padded;
        let plane = oh * ow;
        let (gp, dp, xp) = (gw.as_mut_ptr(), dy.as_ptr(), x.as_ptr());
        // SAFETY: rows `o..o + R` of `dy` and `gw` exist, and row `oy + i` of every
        // padded plane; a block of the output row and its `T − 1` neighbours stay
        // inside the padded row (`pw = ow + T − 1`).
        unsafe {
            for c in 0..g.channels {
                for i in 0..kh {
                    let mut acc = [[V::zero(); T]; R];
                    for oy in 0..oh {
                        let line = xp.add(c * ph * pw + (oy + i) * pw);
                        let out = dp.add(o * plane + oy * ow);
                        for bx in (0..ow).step_by(V::LANES) {
                            let xv: [V; T] = std::array::from_fn(|t| V::load(line.add(bx + t)));
                            for (r, acc) in acc.iter_mut().enumerate() {
                                let d = V::load(out.add(r * plane + bx));
                                for (acc, &xv) in acc.iter_mut().zip(&xv) {
                                    *acc = V::fmadd(d, xv, *acc);
                                }
                            }
                        }
                    }
                    for (r, acc) in acc.iter().enumerate() {
                        for (t, &acc) in acc.iter().enumerate() {
                            let at = &mut *gp.add((o + r) * k + (c * kh + i) * T + t);
                            let sum = V::sum(acc);
                            *at = if add { *at + sum } else { sum };
                        }
                    }
                }
            }
        }
    }

    /// `acc[r][q] = Σ_steps a[r][walk offset] · b[step][LANES q..LANES (q + 1)]`, `b`'s
    /// rows `b_stride` apart in the walk's order.
    ///
    /// # Safety
    /// Every `a[r]` (`r < R`) plus every offset of the walk, and `Q` vectors of each of
    /// `b`'s `walk.len()` rows, must be readable; the processor must have `V`'s
    /// instructions.
    #[inline(always)]
    unsafe fn lanes_tile<V: Vector, const R: usize, const Q: usize>(
        a: [*const f32; MAX_ROWS],
        walk: Walk,
        b: *const f32,
        b_stride: usize,
    ) -> [[V; Q]; R] {
        // SAFETY: the caller's guarantees cover every read.
        unsafe {
            let mut acc = [[V::zero(); Q]; R];
            let mut b = b;
            for x in 0..walk.n.0 {
                for y in 0..walk.n.1 {
                    let base = x * walk.stride.0 + y * walk.stride.1;
                    for z in 0..walk.n.2 {
                        let at = base + z * walk.stride.2;
                        let bv: [V; Q] = std::array::from_fn(|q| V::load(b.add(q * V::LANES)));
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let av = V::splat(*a[r].add(at));
                            for (acc, &bv) in acc.iter_mut().zip(&bv) {
                                *acc = V::fmadd(av, bv, *acc);
                            }
                        }
                        b = b.add(b_stride);
                    }
                }
            }
            acc
        }
    }

    /// [`super::lanes_convolve`]: for each group of `V::POSITION_VECTORS` vectors of
    /// output channels, tiles of `V::POSITION_ROWS` output positions; each tile's sums
    /// are written out channel by channel.
    ///
    /// # Safety
    /// As [`super::lanes_convolve`] checks; the processor must have `V`'s instructions.
    #[inline(always)]
    pub(super) unsafe fn lanes_convolve<V: Vector>(
        y: &mut [f32],
        add: bool,
        wt: &[f32],
        x: &[f32],
        g: Geometry,
    ) {
        let (taps, positions) = (g.taps(), g.positions());
        let channels = wt.len() / taps.len();
        let plane = g.out.0 * g.out.1;
        let (yp, xp) = (y.as_mut_ptr(), x.as_ptr());
        let mut o = 0;
        while o < channels {
            let q = ((channels - o) / V::LANES).min(V::POSITION_VECTORS);
            // SAFETY (all below): channels `o..o + LANES q` exist in `wt` and `y`; every
            // position of the tile is in the plane (the last one repeated to fill it).
            let b = unsafe { wt.as_ptr().add(o) };
            let mut p = 0;
            while p < plane {
                let r = (plane - p).min(V::POSITION_ROWS);
                let a: [*const f32; MAX_ROWS] =
                    std::array::from_fn(|i| unsafe { xp.add(positions.offset(p + i.min(r - 1))) });
                let y = unsafe { yp.add(o * plane + p) };
                unsafe {
                    if V::LANES == 16 {
                        by_tile!(V, r, q, [8 7 6 5 4 3 2], [2],
                            position_tile(a, taps, b, channels, y, plane, add))
                    } else {
                        by_tile!(V, r, q, [6 5 4 3 2], [2],
                            position_tile(a, taps, b, channels, y, plane, add))
                    }
                };
                p += r;
            }
            o += q * V::LANES;
        }
    }

    /// One tile of [`lanes_convolve`]: `R` positions from `y`, `Q` vectors of channels
    /// whose planes are `plane` apart.
    ///
    /// # Safety
    /// As [`lanes_convolve`], for this tile.
    #[inline(always)]
    unsafe fn position_tile<V: Vector, const R: usize, const Q: usize>(
        a: [*const f32; MAX_ROWS],
        taps: Walk,
        b: *const f32,
        b_stride: usize,
        y: *mut f32,
        plane: usize,
        add: bool,
    ) {
        // SAFETY: the caller's guarantees cover every read and write.
        unsafe {
            let acc = lanes_tile::<V, R, Q>(a, taps, b, b_stride);
            let mut lanes = [0.0f32; 16];
            for (r, acc) in acc.iter().enumerate() {
                for (q, &acc) in acc.iter().enumerate() {
                    V::store(lanes.as_mut_ptr(), acc);
                    for (l, &v) in lanes[..V::LANES].iter().enumerate() {
                        let at = &mut *y.add((q * V::LANES + l) * plane + r);
                        *at = if add { *at + v } else { v };
                    }
                }
            }
        }
    }

    /// [`super::lanes_weight_gradient`]: for each group of `V::TAP_VECTORS` vectors of
    /// output channels, tiles of `V::TAP_ROWS` taps summed over every position.
    ///
    /// # Safety
    /// `gwt` must be `taps.len() × channels`, `gt` `positions.len() × channels`, and
    /// every tap of every position inside `x`; the processor must have `V`'s
    /// instructions.
    #[inline(always)]
    pub(super) unsafe fn lanes_weight_gradient<V: Vector>(
        gwt: &mut [f32],
        add: bool,
        x: &[f32],
        gt: &[f32],
        channels: usize,
        positions: Walk,
        taps: Walk,
    ) {
        let k = taps.len();
        let (gp, xp) = (gwt.as_mut_ptr(), x.as_ptr());
        let mut o = 0;
        while o < channels {
            let q = ((channels - o) / V::LANES).min(V::TAP_VECTORS);
            // SAFETY (all below): as the caller guarantees; every tap of the tile exists
            // (the last one repeated to fill it).
            let b = unsafe { gt.as_ptr().add(o) };
            let mut t = 0;
            while t < k {
                let r = (k - t).min(V::TAP_ROWS);
                let a: [*const f32; MAX_ROWS] =
                    std::array::from_fn(|i| unsafe { xp.add(taps.offset(t + i.min(r - 1))) });
                let dst = unsafe { gp.add(t * channels + o) };
                unsafe {
                    if V::LANES == 16 {
                        by_tile!(V, r, q, [4 3 2], [4 3 2],
                            tap_tile(a, positions, b, channels, dst, add))
                    } else {
                        by_tile!(V, r, q, [6 5 4 3 2], [2],
                            tap_tile(a, positions, b, channels, dst, add))
                    }
                };
                t += r;
            }
            o += q * V::LANES;
        }
    }

    /// One tile of [`lanes_weight_gradient`]: `R` taps' rows from `dst` (`b_stride`
    /// apart), `Q` vectors of channels.
    ///
    /// # Safety
    /// As [`lanes_weight_gradient`], for this tile.
    #[inline(always)]
    unsafe fn tap_tile<V: Vector, const R: usize, const Q: usize>(
        a: [*const f32; MAX_ROWS],
        positions: Walk,
        b: *const f32,
        b_stride: usize,
        dst: *mut f32,
        add: bool,
    ) {
        // SAFETY: the caller's guarantees cover every read and write.
        unsafe {
            let acc = lanes_tile::<V, R, Q>(a, positions, b, b_stride);
            for (r, acc) in acc.iter().enumerate() {
                for (q, &acc) in acc.iter().enumerate() {
                    let at = dst.add(r * b_stride + q * V::LANES);
                    let sum = if add { V::add(V::load(at), acc) } else { acc };
                    V::store(at, sum);
                }
            }
        }
    }
}
