//! 2-d convolution over `[channels, height, width]` samples, as a GEMM per sample.
//!
//! For each sample, im2col lays the receptive fields out as a `K x P` matrix
//! (`K = in_channels · kh · kw` rows, `P = out_h · out_w` columns); then
//! `y = W · col + b` with the weight `[out_channels, K]` (PyTorch's
//! `[out, in, kh, kw]`, row-major) and an optional fused activation, as for dense
//! layers. The backward pass reads each sample's columns again:
//!
//! - `grad_weight = Σ_n g_n · col_nᵀ`, `grad_bias = Σ_n Σ_p g_n`,
//! - `grad_col_n = Wᵀ · g_n`, scattered back onto the input by col2im,
//!
//! where `g` is `grad_output ⊙ f'(output)`.
//!
//! On a processor with AVX2 and FMA (AVX-512 where it has it), f32 "same" convolutions
//! of stride 1 skip all of this: `direct.rs` takes their three products from
//! zero-padded copies of the planes (`direct::applies`, `direct::lanes_apply`). Those
//! that keep their columns (below) with channels in whole vectors and more than one tap
//! take their forward pass and weight gradient from there too, at their stride
//! (`direct::strided_apply`), and build no columns in the forward pass.
//!
//! Where the convolution [rebuilds its columns](Conv2dShape::rebuilds_columns) (stride
//! 1, output rows as wide as input rows: a tap's row is the input plane shifted, one
//! copy), the backward pass runs im2col again, and only one sample's columns exist at a
//! time on each of the two threads ([`Conv2dShape::cols_scratch_len`]), so they stay in
//! the core's L2 cache between im2col and the GEMMs that read them. Keeping every
//! sample's columns from the forward pass wrote ResNet-20's (9 values per input value)
//! out to memory and read them back, and made them most of its workspace (a peak RSS of
//! 714 MiB at batch 64, 368 MiB now). Other convolutions keep the batch's columns
//! from the forward pass: their im2col copies a row at a time, and rebuilding made the
//! benchmark CNN's step slower. When at most half of `g` is non-zero (a
//! ReLU and a max pool after the convolution leave about a fifth) and the geometry
//! suits its f32 kernels, both products are taken from the non-zeros alone instead
//! (`sparse.rs`): the benchmark CNN's second convolution's backward pass went from
//! 3.46 to 1.73 ms (`cargo bench --bench cnn_kernels`, fastest of 200 calls at batch
//! 64). Output positions follow PyTorch:
//! `out = ⌊(in + 2·padding − dilation·(kernel − 1) − 1) / stride⌋ + 1`.
//!
//! im2col was chosen over an implicit GEMM because faer's GEMM wants an explicit
//! `K x P` matrix. im2col copies whole
//! (strided) pieces of input rows and col2im adds them back, with the padding at each
//! row's ends worked out once per tap, not per value: with per-value bounds checks, the
//! padded 3x3 convolutions of ResNet-20 spent 44 % of a training step in the two.
//!
//! # Shapes
//! `input`: `batch x [in_channels, in_h, in_w]`; `output`: `batch x [out_channels,
//! out_h, out_w]`; `cols`: `2 x K x P` (scratch) or `batch x K x P` (kept), as
//! [`Conv2dShape::cols_buffer_len`] says.
//!
//! # Initialisation
//! PyTorch's default for `Conv2d`: weight and bias ~ `U(-1/√K, 1/√K)`.

use faer::{MatMut, MatRef, Par};

use super::activation::{bias_activation_in_place, scale_by_derivative};
use super::direct::{self, Path};
use super::matmul;
use super::{batch_half, bias_grad, check_len, sparse, thin, Accum, Activation};
use crate::simd::vectorized;
use crate::Float;
use kiln_shapes::Conv2dShape;

/// Which output columns tap column `j` reads inside the input: the output columns
/// `lo..hi`, output column `lo` reading input column `first` and each next one `stride`
/// further on. Columns outside `lo..hi` read padding (zeros). It depends on `j` alone, so
/// im2col and col2im work it out once per tap, not per output row (with the divisions
/// per row, a CNN without padding, whose rows are 11 values, ran 8 % slower).
#[inline(always)]
fn tap_cols(s: &Conv2dShape, j: usize) -> (usize, usize, usize) {
    let (iw, ow, sx) = (s.in_size.1 as isize, s.out_size.1, s.stride.1 as isize);
    let off = (j * s.dilation.1) as isize - s.padding.1 as isize;
    // 0 ≤ ox · sx + off ≤ iw − 1
    let lo = if off >= 0 {
        0
    } else {
        ((-off + sx - 1) / sx) as usize
    }
    .min(ow);
    let hi = if iw - off <= 0 {
        0
    } else {
        ((iw - 1 - off) / sx + 1) as usize
    }
    .clamp(lo, ow);
    // Only read when lo < hi, where lo · sx + off ≥ 0.
    let first = (lo as isize * sx + off).max(0) as usize;
    (lo, hi, first)
}

/// The input row that tap row `i` of output row `oy` reads, or `None` where it falls in
/// the padding.
#[inline(always)]
fn tap_y(s: &Conv2dShape, oy: usize, i: usize) -> Option<usize> {
    let y = (oy * s.stride.0 + i * s.dilation.0).checked_sub(s.padding.0)?;
    (y < s.in_size.0).then_some(y)
}

/// The output rows `lo..hi` whose tap row `i` lies inside the input, for a stride of 1
/// along the rows, and the input row of output row 0 (`dy`, possibly negative).
#[inline(always)]
fn tap_rows(s: &Conv2dShape, i: usize) -> (usize, usize, isize) {
    let dy = (i * s.dilation.0) as isize - s.padding.0 as isize;
    let lo = (-dy).max(0) as usize;
    let hi = (s.in_size.0 as isize - dy).clamp(0, s.out_size.0 as isize) as usize;
    (lo.min(hi), hi, dy)
}

/// Runs `body` (im2col's or col2im's loops) inside [`vectorized`] where the
/// convolution [rebuilds its columns](Conv2dShape::rebuilds_columns) and the loops run
/// over whole planes; row by row, the wrapper made the benchmark CNN's 11-value rows
/// slower, so there it runs as compiled.
#[inline(always)]
fn plane_lanes(s: &Conv2dShape, body: impl FnOnce()) {
    if s.rebuilds_columns() {
        vectorized(body);
    } else {
        body();
    }
}

/// Where the columns of the first `half` samples end in `cols`: one sample's worth of
/// scratch if the convolution rebuilds its columns, else `half` samples' worth.
fn half_cols(s: &Conv2dShape, half: usize) -> usize {
    if s.rebuilds_columns() {
        s.cols_len()
    } else {
        half * s.cols_len()
    }
}

/// The columns of sample `n` of a half of the batch, in that half's part of `cols`
/// ([`half_cols`]): the same scratch for every sample if the convolution rebuilds its
/// columns.
fn sample_cols<'a, T>(s: &Conv2dShape, cols: &'a mut [T], n: usize) -> &'a mut [T] {
    let at = if s.rebuilds_columns() { 0 } else { n };
    &mut cols[at * s.cols_len()..][..s.cols_len()]
}

/// For convolutions that [rebuild their columns](Conv2dShape::rebuilds_columns), where
/// output position `q` of a tap's row reads input position `q + shift` wherever it reads
/// the input at all: the positions `a..b` of tap `(i, j)`'s row that [`tap_rows`] keeps
/// and whose input position lies in the plane, and the input position of `a` (all 0 if
/// there are none). Every position that reads the input is in `a..b`; the others in it
/// read a neighbouring row's end (where the tap falls in the column padding) and must
/// be treated as padding by the caller.
#[inline(always)]
fn plane_span(s: &Conv2dShape, i: usize, j: usize) -> (usize, usize, usize) {
    let (ih, iw) = s.in_size;
    let (rlo, rhi, dy) = tap_rows(s, i);
    let shift = dy * iw as isize + (j * s.dilation.1) as isize - s.padding.1 as isize;
    let a = ((rlo * iw) as isize).max(-shift);
    let b = ((rhi * iw) as isize).min((ih * iw) as isize - shift);
    if a >= b {
        return (0, 0, 0);
    }
    (a as usize, b as usize, (a + shift) as usize)
}

/// Fills the `K x P` column matrix of one sample. Where the convolution [rebuilds its
/// columns](Conv2dShape::rebuilds_columns), each tap's row is one copy of its shifted
/// input plane, then the positions that fall in the padding are zeroed (3x3
/// convolutions on 32 x 32 planes copied 32 values at a time, with fills at the ends:
/// a fifth of a ResNet-20 step in im2col); otherwise a row of output positions at a
/// time: the inside of each is a (strided) piece of an input row, its ends are padding.
pub(super) fn im2col<T: Float>(s: &Conv2dShape, cols: &mut [T], input: &[T]) {
    plane_lanes(
        s,
        #[inline(always)]
        || im2col_rows(s, cols, input),
    );
}

/// [`im2col`]'s loops, inlined into [`plane_lanes`].
#[inline(always)]
fn im2col_rows<T: Float>(s: &Conv2dShape, cols: &mut [T], input: &[T]) {
    let (kh, kw) = s.kernel;
    let ow = s.out_size.1;
    let (ih, iw) = s.in_size;
    let (p, sx) = (s.p(), s.stride.1);
    let whole = s.rebuilds_columns();
    for c in 0..s.in_channels {
        let plane = &input[c * ih * iw..(c + 1) * ih * iw];
        for i in 0..kh {
            for j in 0..kw {
                let row = &mut cols[((c * kh + i) * kw + j) * p..][..p];
                let (lo, hi, first) = tap_cols(s, j);
                if whole {
                    let (a, b, from) = plane_span(s, i, j);
                    row[a..b].copy_from_slice(&plane[from..from + b - a]);
                    row[..a].fill(T::ZERO);
                    row[b..].fill(T::ZERO);
                    zero_columns(row, a, b, ow, lo, hi);
                    continue;
                }
                for (oy, dst) in row.chunks_exact_mut(ow).enumerate() {
                    let Some(y) = tap_y(s, oy, i).filter(|_| lo < hi) else {
                        dst.fill(T::ZERO);
                        continue;
                    };
                    let src = &plane[y * iw..][..iw];
                    dst[..lo].fill(T::ZERO);
                    dst[hi..].fill(T::ZERO);
                    if sx == 1 {
                        dst[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
                    } else {
                        for (n, d) in dst[lo..hi].iter_mut().enumerate() {
                            *d = src[first + n * sx];
                        }
                    }
                }
            }
        }
    }
}

/// Zeroes, in `row[a..b]`, the positions whose column (position modulo `width`) is
/// outside `lo..hi` (`lo ≤ hi ≤ width`): a strided pass per such column, of which a
/// padded convolution has few (a pass per line of `width` that found its place with a
/// division spent a quarter of im2col's time on the division).
#[inline(always)]
fn zero_columns<T: Float>(row: &mut [T], a: usize, b: usize, width: usize, lo: usize, hi: usize) {
    if a >= b {
        return;
    }
    let line = a - a % width;
    for x in (0..lo).chain(hi..width) {
        let first = if line + x >= a {
            line + x
        } else {
            line + x + width
        };
        if first < b {
            for v in row[first..b].iter_mut().step_by(width) {
                *v = T::ZERO;
            }
        }
    }
}

/// Adds the `K x P` column gradient of one sample onto its input gradient (the
/// padding's share is dropped). Where the convolution [rebuilds its
/// columns](Conv2dShape::rebuilds_columns), each tap's row goes on as one shifted sum
/// over the plane, after its padding positions are zeroed in `grad_cols` (which is why
/// it is `mut`; the result does not change: those positions then add 0); otherwise a
/// row of output positions at a time.
pub(super) fn col2im<T: Float>(s: &Conv2dShape, grad_input: &mut [T], grad_cols: &mut [T]) {
    plane_lanes(
        s,
        #[inline(always)]
        || col2im_rows(s, grad_input, grad_cols),
    );
}

/// [`col2im`]'s loops, inlined into [`plane_lanes`].
#[inline(always)]
fn col2im_rows<T: Float>(s: &Conv2dShape, grad_input: &mut [T], grad_cols: &mut [T]) {
    let (kh, kw) = s.kernel;
    let ow = s.out_size.1;
    let (ih, iw) = s.in_size;
    let (p, sx) = (s.p(), s.stride.1);
    let whole = s.rebuilds_columns();
    for c in 0..s.in_channels {
        let plane = &mut grad_input[c * ih * iw..(c + 1) * ih * iw];
        for i in 0..kh {
            for j in 0..kw {
                let row = &mut grad_cols[((c * kh + i) * kw + j) * p..][..p];
                let (lo, hi, first) = tap_cols(s, j);
                if lo == hi {
                    continue;
                }
                if whole {
                    let (a, b, from) = plane_span(s, i, j);
                    zero_columns(row, a, b, ow, lo, hi);
                    for (d, &g) in plane[from..from + b - a].iter_mut().zip(&row[a..b]) {
                        *d += g;
                    }
                    continue;
                }
                for (oy, src) in row.chunks_exact(ow).enumerate() {
                    let Some(y) = tap_y(s, oy, i) else {
                        continue;
                    };
                    let dst = &mut plane[y * iw..][..iw];
                    if sx == 1 {
                        for (d, &g) in dst[first..first + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += g;
                        }
                    } else {
                        for (n, &g) in src[lo..hi].iter().enumerate() {
                            dst[first + n * sx] += g;
                        }
                    }
                }
            }
        }
    }
}

/// `output = activation(conv(input, weight) + bias)`, with the columns in `cols`
/// ([`Conv2dShape::cols_buffer_len`] values): kept there for the backward pass, or
/// scratch where the convolution [rebuilds them](Conv2dShape::rebuilds_columns).
///
/// # Panics
/// If a buffer's length does not match the geometry, or the activation is not fusable.
pub fn conv2d_forward<T: Float>(
    s: &Conv2dShape,
    output: &mut [T],
    cols: &mut [T],
    input: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    activation: Activation,
    batch: usize,
) {
    check_len("conv2d input", input.len(), batch * s.input_len());
    check_len("conv2d output", output.len(), batch * s.output_len());
    check_len("conv2d cols", cols.len(), s.cols_buffer_len(batch));
    check_len("conv2d weight", weight.len(), s.out_channels * s.k());
    if let Some(bias) = bias {
        check_len("conv2d bias", bias.len(), s.out_channels);
    }
    assert!(
        activation.fusable(),
        "{activation:?} cannot be fused after a GEMM"
    );
    let w = MatRef::from_row_major_slice(weight, s.out_channels, s.k());
    let flops = 2.0 * (s.out_channels * s.cols_len()) as f64;
    let half = batch_half(batch, flops);
    let path = direct::path::<T>(s, half, batch);
    // Each half's scratch, and the transposed weights of the channels-in-lanes paths.
    let (c0, c1, transposed) = match path {
        Path::Lanes => direct::lanes_split(s, cols, weight),
        Path::Strided => direct::strided_split(s, cols, half, weight),
        Path::Rows | Path::Columns => {
            let (c0, c1) = cols.split_at_mut(half_cols(s, half));
            (c0, c1, &[][..])
        }
    };
    let run = |first: usize, out: &mut [T], cols: &mut [T]| {
        for (n, y) in out.chunks_exact_mut(s.output_len()).enumerate() {
            let x = &input[(first + n) * s.input_len()..][..s.input_len()];
            match path {
                Path::Lanes | Path::Strided => direct::lanes_forward(s, y, cols, x, transposed),
                Path::Rows => direct::forward(s, y, sample_cols(s, cols, n), x, weight),
                Path::Columns => {
                    let col = sample_cols(s, cols, n);
                    im2col(s, col, x);
                    if !thin::forward(y, weight, col, s.k()) {
                        let col = MatRef::from_row_major_slice(col, s.k(), s.p());
                        let dst = MatMut::from_row_major_slice_mut(y, s.out_channels, s.p());
                        matmul(dst, Accum::Replace, w, col, T::ONE, Par::Seq);
                    }
                }
            }
            for (c, plane) in y.chunks_exact_mut(s.p()).enumerate() {
                let b = bias.map_or(T::ZERO, |b| b[c]);
                bias_activation_in_place(plane, b, activation);
            }
        }
    };
    if half < batch {
        let (y0, y1) = output.split_at_mut(half * s.output_len());
        super::join(|| run(0, y0, c0), || run(half, y1, c1));
    } else {
        run(0, output, c0);
    }
}

/// Gradients of [`conv2d_forward`].
///
/// `grad_output` is overwritten with the pre-activation gradient; `cols` (as given to
/// the forward pass) is overwritten with column gradients or scratch, `partial`
/// ([`Conv2dShape::partial_len`] values) is scratch. `grad_weight` and `grad_bias` are
/// replaced; `grad_input`, if asked for, is replaced or accumulated.
///
/// When most of the pre-activation gradient is zero (a ReLU and a max pool after the
/// convolution), and the geometry allows it, both gradients are taken from its non-zero
/// values alone (`layers/sparse.rs`); otherwise as GEMMs over each sample's columns,
/// rebuilt from `input` where the convolution [rebuilds
/// them](Conv2dShape::rebuilds_columns).
///
/// # Panics
/// If a buffer's length does not match the geometry.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<T: Float>(
    s: &Conv2dShape,
    grad_input: Option<(&mut [T], Accum)>,
    grad_weight: &mut [T],
    grad_bias: Option<&mut [T]>,
    partial: &mut [T],
    cols: &mut [T],
    input: &[T],
    weight: &[T],
    output: &[T],
    grad_output: &mut [T],
    activation: Activation,
    batch: usize,
) {
    let (k, p, co) = (s.k(), s.p(), s.out_channels);
    let (ilen, olen) = (s.input_len(), s.output_len());
    check_len("conv2d input", input.len(), batch * ilen);
    check_len("conv2d output", output.len(), batch * olen);
    check_len("conv2d grad_output", grad_output.len(), batch * olen);
    check_len("conv2d cols", cols.len(), s.cols_buffer_len(batch));
    check_len("conv2d grad_weight", grad_weight.len(), co * k);
    check_len("conv2d partial", partial.len(), s.partial_len());
    if let Some((grad_input, _)) = &grad_input {
        check_len("conv2d grad_input", grad_input.len(), batch * ilen);
    }
    let half = batch_half(batch, 2.0 * (co * s.cols_len()) as f64);
    // The pre-activation gradient, counting its non-zeros where they could be used.
    let sparse = sparse::applies::<T>(s);
    let derivative = |first: usize, go: &mut [T]| -> usize {
        scale_by_derivative(go, &output[first * olen..][..go.len()], activation);
        if sparse {
            go.iter().filter(|&&v| v != T::ZERO).count()
        } else {
            0
        }
    };
    let nonzero = if half < batch {
        let (go0, go1) = grad_output.split_at_mut(half * olen);
        let (a, b) = super::join(|| derivative(0, go0), || derivative(half, go1));
        a + b
    } else {
        derivative(0, grad_output)
    };
    let grad_output: &[T] = grad_output;
    let samples = |first: usize, count: usize| {
        (
            &input[first * ilen..][..count * ilen],
            &grad_output[first * olen..][..count * olen],
        )
    };
    if sparse && nonzero as f64 <= sparse::MAX_DENSITY * grad_output.len() as f64 {
        #[cfg(test)]
        sparse::taken::note();
        let (filters, gw0, gw1) = sparse::split_partial(s, partial);
        sparse::to_tap_major(s, filters, weight);
        let filters: &[T] = filters;
        halves(
            s,
            half,
            batch,
            grad_input,
            [gw0, gw1],
            cols,
            &|first, count, gi, gw, col| {
                let (x, g) = samples(first, count);
                let gi = gi.map(|(gi, accum)| (gi, accum == Accum::Add));
                sparse::backward(s, gi, gw, &mut col[..s.cols_len()], x, filters, g);
            },
        );
        if half == batch {
            gw1.fill(T::ZERO);
        }
        sparse::sum_from_tap_major(s, grad_weight, gw0, gw1);
    } else {
        // The first half's weight gradient goes straight into `grad_weight`, the
        // second half's into `partial`; taken transposed, both into `partial`.
        let path = direct::path::<T>(s, half, batch);
        // The channels-in-lanes paths take the weight gradient as `k × co`.
        let transposed = match path {
            Path::Lanes | Path::Strided => true,
            Path::Rows => false,
            Path::Columns => weight_grad_transposed::<T>(s),
        };
        let (gw1, rest) = partial.split_at_mut(co * k);
        let (rest, flipped) = rest.split_at_mut(co * k);
        // The weights of the direct input gradient, once for both halves.
        let flipped: &[T] = if matches!(path, Path::Rows | Path::Lanes) && grad_input.is_some() {
            let flipped = &mut flipped[..co * k];
            direct::flip(s, flipped, weight, path == Path::Lanes);
            flipped
        } else {
            &[]
        };
        // Where the first half's sum is taken, and where it goes transposed at the end.
        let (gw0, transposed_into) = if transposed {
            (&mut rest[..co * k], Some(grad_weight))
        } else {
            (grad_weight, None)
        };
        halves(
            s,
            half,
            batch,
            grad_input,
            [&mut *gw0, &mut *gw1],
            cols,
            &|first, count, gi, gw, col| {
                let (x, g) = samples(first, count);
                let weights = [weight, flipped];
                dense_backward(s, path, gi, gw, col, x, weights, g, transposed);
            },
        );
        if half < batch {
            for (w, &q) in gw0.iter_mut().zip(gw1.iter()) {
                *w += q;
            }
        }
        if let Some(grad_weight) = transposed_into {
            sparse::transpose(grad_weight, gw0, k, co);
        }
    }
    if let Some(grad_bias) = grad_bias {
        check_len("conv2d grad_bias", grad_bias.len(), co);
        bias_grad(grad_bias, grad_output, olen, p);
    }
}

/// Runs `body(first_sample, count, grad_input, grad_weight, cols)` on each half of a
/// batch split after `half` samples (`half == batch`: the whole batch on this thread,
/// with `grad_weight[0]` alone): each half gets its own part of `grad_input`, its own
/// weight gradient and its part of `cols` ([`half_cols`]).
#[allow(clippy::type_complexity)]
fn halves<T: Float>(
    s: &Conv2dShape,
    half: usize,
    batch: usize,
    grad_input: Option<(&mut [T], Accum)>,
    [gw0, gw1]: [&mut [T]; 2],
    cols: &mut [T],
    body: &(impl Fn(usize, usize, Option<(&mut [T], Accum)>, &mut [T], &mut [T]) + Sync),
) {
    let (c0, c1) = cols.split_at_mut(half_cols(s, half));
    if half == batch {
        body(0, batch, grad_input, gw0, c0);
        return;
    }
    let (gi0, gi1) = match grad_input {
        Some((gi, accum)) => {
            let (a, b) = gi.split_at_mut(half * s.input_len());
            (Some((a, accum)), Some((b, accum)))
        }
        None => (None, None),
    };
    super::join(
        || body(0, half, gi0, gw0, c0),
        || body(half, batch - half, gi1, gw1, c1),
    );
}

/// Whether [`conv2d_backward`] takes the weight gradient's products into a
/// column-major (transposed) buffer: when the column matrix's rows lie a multiple of 4
/// KiB apart and there are at least 16 of them. faer packs the columns for the
/// row-major product a few dozen rows at a time; rows 4 KiB apart all fall in one set
/// of the L1 cache (64 sets of 64-byte lines on the x86 cores of both vendors, 8 or 12
/// ways), and the packing thrashed it. Into a column-major buffer the product packs the
/// output gradient instead and reads the columns as they lie. Timed with faer alone on
/// one Zen 4 core over a grid of 1, 3, 16, 32 and 64 input channels, 16, 32 and 64
/// output channels and 121 to 4,096 positions: 1.2 to 2.1 times as fast at 1,024, 2,048
/// and 4,096 positions in f32 (ResNet-20's first stage: 120–140 against 60–67 µs a
/// sample) with 27 rows or more, 0.86 to 1.12 times with 9 (one input channel, fewer
/// rows than an L1 set has ways), and 0.89 to 1.44 times at the other sizes, which keep
/// the row-major product (docs/design.md, "Convolutions").
fn weight_grad_transposed<T>(s: &Conv2dShape) -> bool {
    s.k() >= 16 && (s.p() * std::mem::size_of::<T>()).is_multiple_of(4096)
}

/// The weight and input gradients of [`conv2d_backward`] for the samples of `input` as
/// GEMMs, from the pre-activation gradient `g`, a sample at a time: the sample's
/// columns (im2col into the scratch `cols` where the convolution rebuilds them, else
/// kept in `cols` by the forward pass), `grad_weight (+)= g_n · col_nᵀ` (held
/// `[k, co]` if `transposed`, [`weight_grad_transposed`]), then, if asked for,
/// `col = Wᵀ · g_n` and col2im onto the input gradient. On the direct paths (`path`)
/// the same two gradients come from `direct.rs`, the input gradient from the flipped
/// weights (`[weight, flipped]`), with `cols` as scratch; on [`Path::Strided`] the
/// weight gradient comes from `direct.rs` and the input gradient as above.
#[allow(clippy::too_many_arguments)]
fn dense_backward<T: Float>(
    s: &Conv2dShape,
    path: Path,
    mut grad_input: Option<(&mut [T], Accum)>,
    grad_weight: &mut [T],
    cols: &mut [T],
    input: &[T],
    [weight, flipped]: [&[T]; 2],
    g: &[T],
    transposed: bool,
) {
    let (k, p, co) = (s.k(), s.p(), s.out_channels);
    let (ilen, olen) = (s.input_len(), s.output_len());
    let w = MatRef::from_row_major_slice(weight, co, k);
    for (n, (x, g)) in input
        .chunks_exact(ilen)
        .zip(g.chunks_exact(olen))
        .enumerate()
    {
        // Without columns kept from the forward pass, the whole half's are scratch.
        let col = match path {
            Path::Strided => &mut cols[..],
            _ => sample_cols(s, cols, n),
        };
        let accum = if n == 0 { Accum::Replace } else { Accum::Add };
        let gx = grad_input
            .as_mut()
            .map(|(gi, accum)| (&mut gi[n * ilen..][..ilen], *accum));
        match path {
            // Both gradients from `direct.rs`.
            Path::Rows => {
                direct::weight_gradient(s, grad_weight, accum, col, x, g);
                if let Some((gx, accum)) = gx {
                    direct::input_gradient(s, gx, accum, col, g, flipped);
                }
                continue;
            }
            Path::Lanes => {
                direct::lanes_weight_gradient(s, grad_weight, accum, col, x, g);
                if let Some((gx, accum)) = gx {
                    direct::lanes_input_gradient(s, gx, accum, col, g, flipped);
                }
                continue;
            }
            // The weight gradient from `direct.rs`, the input gradient below.
            Path::Strided => direct::lanes_weight_gradient(s, grad_weight, accum, col, x, g),
            Path::Columns => {
                if s.rebuilds_columns() {
                    im2col(s, col, x);
                }
                if transposed || !thin::weight_grad(grad_weight, g, col, k, n > 0) {
                    let dst = if transposed {
                        MatMut::from_column_major_slice_mut(&mut *grad_weight, co, k)
                    } else {
                        MatMut::from_row_major_slice_mut(&mut *grad_weight, co, k)
                    };
                    let g = MatRef::from_row_major_slice(g, co, p);
                    let col = MatRef::from_row_major_slice(col, k, p);
                    matmul(dst, accum, g, col.transpose(), T::ONE, Par::Seq);
                }
            }
        }
        let Some((gx, accum)) = gx else {
            continue;
        };
        let col = &mut col[..k * p];
        let g = MatRef::from_row_major_slice(g, co, p);
        let dst = MatMut::from_row_major_slice_mut(&mut *col, k, p);
        matmul(dst, Accum::Replace, w.transpose(), g, T::ONE, Par::Seq);
        if accum == Accum::Replace {
            gx.fill(T::ZERO);
        }
        col2im(s, gx, col);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn shape(
        cin: usize,
        hw: (usize, usize),
        cout: usize,
        k: (usize, usize),
        st: (usize, usize),
        pad: (usize, usize),
        dil: (usize, usize),
    ) -> Conv2dShape {
        let out = |i: usize, k: usize, s: usize, p: usize, d: usize| {
            (i + 2 * p - d * (k - 1) - 1) / s + 1
        };
        Conv2dShape {
            in_channels: cin,
            in_size: hw,
            out_channels: cout,
            kernel: k,
            stride: st,
            padding: pad,
            dilation: dil,
            out_size: (
                out(hw.0, k.0, st.0, pad.0, dil.0),
                out(hw.1, k.1, st.1, pad.1, dil.1),
            ),
        }
    }

    /// Direct convolution, the definition.
    fn naive(s: &Conv2dShape, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; s.output_len()];
        let (oh, ow) = s.out_size;
        for co in 0..s.out_channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b[co];
                    for ci in 0..s.in_channels {
                        for i in 0..s.kernel.0 {
                            for j in 0..s.kernel.1 {
                                if let Some((yy, xx)) = s.source(oy, ox, i, j) {
                                    let wi = ((co * s.in_channels + ci) * s.kernel.0 + i)
                                        * s.kernel.1
                                        + j;
                                    acc += w[wi] * x[(ci * s.in_size.0 + yy) * s.in_size.1 + xx];
                                }
                            }
                        }
                    }
                    y[(co * oh + oy) * ow + ox] = acc;
                }
            }
        }
        y
    }

    fn check(s: Conv2dShape, batch: usize, act: Activation) {
        let x = values(batch * s.input_len(), 1);
        let w = values(s.out_channels * s.k(), 2);
        let b = values(s.out_channels, 3);
        let forward = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut y = vec![0.0; batch * s.output_len()];
            let mut cols = vec![0.0; s.cols_buffer_len(batch)];
            conv2d_forward(&s, &mut y, &mut cols, x, w, Some(b), act, batch);
            (y, cols)
        };
        let (y, mut cols) = forward(&x, &w, &b);
        for n in 0..batch {
            let expected: Vec<f64> = naive(&s, &x[n * s.input_len()..][..s.input_len()], &w, &b)
                .into_iter()
                .map(|v| act.apply(v))
                .collect();
            assert_close(&y[n * s.output_len()..][..s.output_len()], &expected, 1e-12);
        }
        let c = values(y.len(), 4);
        let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&c, &forward(x, w, b).0);
        let mut gx = vec![0.0; x.len()];
        let mut gw = vec![0.0; w.len()];
        let mut gb = vec![0.0; b.len()];
        let mut partial = vec![0.0; s.partial_len()];
        let mut go = c.clone();
        conv2d_backward(
            &s,
            Some((&mut gx, Accum::Replace)),
            &mut gw,
            Some(&mut gb),
            &mut partial,
            &mut cols,
            &x,
            &w,
            &y,
            &mut go,
            act,
            batch,
        );
        assert_close(&gx, &numeric_grad(&x, 1e-6, |x| loss(x, &w, &b)), 1e-7);
        assert_close(&gw, &numeric_grad(&w, 1e-6, |w| loss(&x, w, &b)), 1e-7);
        assert_close(&gb, &numeric_grad(&b, 1e-6, |b| loss(&x, &w, b)), 1e-7);
    }

    /// Forward (ReLU, bias) and backward: the output, the weight gradient, the bias
    /// gradient and, when `grad_input` is given, the input gradient accumulated onto
    /// it (empty otherwise).
    fn passes<T: Float>(
        s: &Conv2dShape,
        batch: usize,
        [x, w, bias, grad_output]: [&[T]; 4],
        grad_input: Option<(&[T], Accum)>,
    ) -> [Vec<T>; 4] {
        let mut y = vec![T::ZERO; batch * s.output_len()];
        // Scratch as a workspace leaves it: whatever another layer wrote, here NaN, which
        // any value read before it is written would carry into the results.
        let stale = T::from_f64(f64::NAN);
        let mut cols = vec![stale; s.cols_buffer_len(batch)];
        let relu = Activation::Relu;
        conv2d_forward(s, &mut y, &mut cols, x, w, Some(bias), relu, batch);
        let (mut gw, mut gb) = (vec![T::ZERO; w.len()], vec![T::ZERO; bias.len()]);
        let mut partial = vec![stale; s.partial_len()];
        let mut gx = grad_input.map_or_else(Vec::new, |(gx, _)| gx.to_vec());
        conv2d_backward(
            s,
            grad_input.map(|(_, accum)| (gx.as_mut_slice(), accum)),
            &mut gw,
            Some(&mut gb),
            &mut partial,
            &mut cols,
            x,
            w,
            &y,
            &mut grad_output.to_vec(),
            relu,
            batch,
        );
        [y, gw, gb, gx]
    }

    /// Both passes of `s` in f32 (the fast path where one applies) and in f64 (always
    /// the GEMMs): output, weight and bias gradients agree.
    fn f32_agrees_with_f64(s: &Conv2dShape, batch: usize, seed: u64) {
        let x = values(batch * s.input_len(), seed);
        let w = values(s.out_channels * s.k(), seed + 1);
        let bias = values(s.out_channels, seed + 2);
        let go = values(batch * s.output_len(), seed + 3);
        let single = passes(
            s,
            batch,
            [&narrow(&x), &narrow(&w), &narrow(&bias), &narrow(&go)],
            None,
        );
        let double = passes(s, batch, [&x, &w, &bias, &go], None);
        for (i, tol) in [(0, 1e-5), (1, 1e-4), (2, 1e-4)] {
            assert_close(&widen(&single[i]), &double[i], tol);
        }
    }

    /// The backward pass of `s` with a gradient at one position in five (as after a
    /// pool) in f32 and f64: weight, bias and input gradients agree. Returns whether
    /// the f32 pass took the sparse path.
    fn sparse_f32_agrees_with_f64(s: &Conv2dShape, batch: usize, seed: u64) -> bool {
        let x = values(batch * s.input_len(), seed);
        let w = values(s.out_channels * s.k(), seed + 1);
        let bias = values(s.out_channels, seed + 2);
        let go: Vec<f64> = values(batch * s.output_len(), seed + 3)
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 5 == 0 { v } else { 0.0 })
            .collect();
        let gx0 = values(x.len(), seed + 4);
        let before = sparse::taken::count();
        let single = passes(
            s,
            batch,
            [&narrow(&x), &narrow(&w), &narrow(&bias), &narrow(&go)],
            Some((&narrow(&gx0), Accum::Add)),
        );
        let taken = sparse::taken::count() > before;
        let double = passes(s, batch, [&x, &w, &bias, &go], Some((&gx0, Accum::Add)));
        for (got, want) in single[1..].iter().zip(&double[1..]) {
            assert_close(&widen(got), want, 1e-4);
        }
        taken
    }

    #[test]
    fn im2col_and_col2im_match_their_definitions() {
        // (shape, whether it takes the whole-plane path)
        let cases = [
            // 3x3 "same", as in ResNet-20.
            (shape(2, (5, 6), 3, (3, 3), (1, 1), (1, 1), (1, 1)), true),
            // Rows shrink, columns keep their width.
            (shape(1, (6, 7), 2, (5, 3), (1, 1), (0, 1), (1, 1)), true),
            // Dilated "same".
            (shape(2, (6, 5), 2, (3, 3), (1, 1), (2, 2), (2, 2)), true),
            // Taps whose rows lie mostly in the padding.
            (shape(1, (3, 4), 1, (5, 5), (1, 1), (2, 2), (1, 1)), true),
            // Taps whose columns lie wholly in the padding.
            (shape(1, (3, 2), 1, (1, 7), (1, 1), (0, 3), (1, 1)), true),
            (shape(2, (5, 5), 2, (1, 1), (1, 1), (0, 0), (1, 1)), true),
            // Row by row: strides, or output rows narrower than input rows.
            (shape(2, (7, 5), 3, (3, 2), (2, 1), (1, 0), (1, 1)), false),
            (shape(2, (8, 8), 2, (3, 3), (1, 2), (2, 1), (2, 1)), false),
            (shape(2, (6, 6), 2, (3, 3), (1, 1), (0, 0), (1, 1)), false),
            // ResNet-20's downsampling 3x3 and 1x1, and a stride of 3.
            (shape(2, (8, 8), 3, (3, 3), (2, 2), (1, 1), (1, 1)), false),
            (shape(3, (8, 8), 2, (1, 1), (2, 2), (0, 0), (1, 1)), false),
            (shape(1, (9, 10), 2, (2, 3), (1, 3), (0, 1), (1, 1)), false),
        ];
        for (seed, (s, whole)) in cases.into_iter().enumerate() {
            assert_eq!(s.rebuilds_columns(), whole, "{s:?}");
            let seed = 90 + 3 * seed as u64;
            let x = values(s.input_len(), seed);
            let (mut cols, mut want) = (vec![7.0; s.cols_len()], vec![0.0; s.cols_len()]);
            im2col(&s, &mut cols, &x);
            let gcols = values(s.cols_len(), seed + 1);
            let mut gx_want = values(s.input_len(), seed + 2);
            let (ih, iw) = s.in_size;
            for c in 0..s.in_channels {
                for i in 0..s.kernel.0 {
                    for j in 0..s.kernel.1 {
                        let tap = (c * s.kernel.0 + i) * s.kernel.1 + j;
                        for oy in 0..s.out_size.0 {
                            for ox in 0..s.out_size.1 {
                                let at = tap * s.p() + oy * s.out_size.1 + ox;
                                if let Some((y, xx)) = s.source(oy, ox, i, j) {
                                    want[at] = x[(c * ih + y) * iw + xx];
                                    gx_want[(c * ih + y) * iw + xx] += gcols[at];
                                }
                            }
                        }
                    }
                }
            }
            assert_eq!(cols, want, "im2col of {s:?}");
            let mut gx = values(s.input_len(), seed + 2);
            col2im(&s, &mut gx, &mut gcols.clone());
            assert_eq!(gx, gx_want, "col2im of {s:?}");
        }
    }

    #[test]
    fn f32_thin_kernels_agree_with_f64() {
        // One input channel, 3x3: K = 9 takes the thin kernels in f32 (where the
        // processor has AVX-512), the GEMM in f64. 2 samples, 28 x 28 like MNIST.
        let s = shape(1, (28, 28), 32, (3, 3), (1, 1), (0, 0), (1, 1));
        f32_agrees_with_f64(&s, 2, 31);
    }

    #[test]
    fn matches_direct_convolution_and_finite_differences() {
        check(
            shape(1, (6, 6), 2, (3, 3), (1, 1), (0, 0), (1, 1)),
            2,
            Activation::Identity,
        );
        check(
            shape(2, (7, 5), 3, (3, 2), (2, 1), (1, 0), (1, 1)),
            3,
            Activation::Tanh,
        );
        check(
            shape(3, (8, 8), 2, (3, 3), (1, 2), (2, 1), (2, 1)),
            1,
            Activation::Sigmoid,
        );
        // Unpadded with strides and dilation: the row-copy im2col and col2im.
        check(
            shape(2, (9, 8), 3, (3, 2), (2, 3), (0, 0), (2, 1)),
            2,
            Activation::Relu,
        );
        check(
            shape(2, (5, 5), 4, (1, 1), (1, 1), (0, 0), (1, 1)),
            2,
            Activation::Identity,
        );
        // Padding wider than a tap reaches: whole output rows and columns of padding,
        // and a stride that steps over the input's last column.
        check(
            shape(2, (4, 3), 2, (1, 1), (1, 2), (2, 2), (1, 1)),
            2,
            Activation::Identity,
        );
        check(
            shape(2, (5, 4), 3, (3, 3), (2, 2), (1, 1), (1, 1)),
            2,
            Activation::Relu,
        );
        // "Same" convolutions: the whole-plane im2col and col2im.
        check(
            shape(2, (5, 6), 3, (3, 3), (1, 1), (1, 1), (1, 1)),
            2,
            Activation::Relu,
        );
        check(
            shape(2, (6, 4), 2, (5, 3), (1, 1), (1, 1), (1, 1)),
            2,
            Activation::Identity,
        );
        // A dilated tap column that lies wholly past the input's last column (its
        // first input column is beyond the row's end).
        check(
            shape(2, (3, 1), 2, (3, 3), (1, 1), (2, 2), (2, 2)),
            2,
            Activation::Identity,
        );
        // 512 positions of f64, rows of columns 4 KiB apart: the weight gradient taken
        // transposed.
        let s = shape(2, (16, 32), 2, (3, 3), (1, 1), (1, 1), (1, 1));
        assert!(weight_grad_transposed::<f64>(&s));
        check(s, 2, Activation::Tanh);
    }

    #[test]
    fn split_batches_give_the_serial_result() {
        // 64 samples of a 16-channel 3x3 convolution on 14x14 is above the threshold,
        // padded (columns rebuilt in backward) and not (columns kept).
        for padding in [1, 0] {
            let s = shape(16, (14, 14), 16, (3, 3), (1, 1), (padding, padding), (1, 1));
            assert_eq!(s.rebuilds_columns(), padding == 1);
            split_batch_gives_the_serial_result(s);
        }
        // With the weight gradient taken transposed: both halves' sums, and one sample's.
        let s = shape(2, (16, 32), 4, (3, 3), (1, 1), (1, 1), (1, 1));
        assert!(weight_grad_transposed::<f64>(&s));
        split_batch_gives_the_serial_result(s);
    }

    /// The weight gradient taken transposed is the row-major product's: both ways on
    /// the same samples, with and without column padding.
    #[test]
    fn the_transposed_weight_gradient_is_the_row_major_one() {
        for s in [
            shape(2, (16, 32), 3, (3, 3), (1, 1), (1, 1), (1, 1)),
            shape(3, (5, 6), 2, (3, 3), (1, 1), (1, 1), (1, 1)),
        ] {
            let (k, co, batch) = (s.k(), s.out_channels, 3);
            let x = values(batch * s.input_len(), 51);
            let g = values(batch * s.output_len(), 52);
            let w = values(co * k, 53);
            let mut cols = vec![0.0; s.cols_len()];
            let mut by_rows = vec![0.0; co * k];
            let columns = Path::Columns;
            dense_backward(
                &s,
                columns,
                None,
                &mut by_rows,
                &mut cols,
                &x,
                [&w, &[]],
                &g,
                false,
            );
            let mut by_columns = vec![0.0; co * k];
            dense_backward(
                &s,
                columns,
                None,
                &mut by_columns,
                &mut cols,
                &x,
                [&w, &[]],
                &g,
                true,
            );
            let mut back = vec![0.0; co * k];
            sparse::transpose(&mut back, &by_columns, k, co);
            assert_close(&back, &by_rows, 1e-12);
        }
    }

    fn split_batch_gives_the_serial_result(s: Conv2dShape) {
        let batch = 64;
        let x = values(batch * s.input_len(), 5);
        let w = values(s.out_channels * s.k(), 6);
        let bias = values(s.out_channels, 8);
        let mut y = vec![0.0; batch * s.output_len()];
        let mut cols = vec![0.0; s.cols_buffer_len(batch)];
        conv2d_forward(
            &s,
            &mut y,
            &mut cols,
            &x,
            &w,
            Some(&bias),
            Activation::Relu,
            batch,
        );
        let go = values(y.len(), 7);
        let mut gw = vec![0.0; w.len()];
        let mut partial = vec![0.0; s.partial_len()];
        let mut gx = vec![0.0; x.len()];
        let mut gb = vec![0.0; s.out_channels];
        conv2d_backward(
            &s,
            Some((&mut gx, Accum::Replace)),
            &mut gw,
            Some(&mut gb),
            &mut partial,
            &mut cols,
            &x,
            &w,
            &y,
            &mut go.clone(),
            Activation::Relu,
            batch,
        );
        // One sample at a time is the serial path.
        let mut gw_serial = vec![0.0; w.len()];
        let mut gb_serial = vec![0.0; s.out_channels];
        for n in 0..batch {
            let mut y1 = vec![0.0; s.output_len()];
            let mut c1 = vec![0.0; s.cols_buffer_len(1)];
            conv2d_forward(
                &s,
                &mut y1,
                &mut c1,
                &x[n * s.input_len()..][..s.input_len()],
                &w,
                Some(&bias),
                Activation::Relu,
                1,
            );
            assert_close(&y1, &y[n * s.output_len()..][..s.output_len()], 1e-12);
            let mut g1 = vec![0.0; w.len()];
            let mut gx1 = vec![0.0; s.input_len()];
            let mut gb1 = vec![0.0; s.out_channels];
            conv2d_backward(
                &s,
                Some((&mut gx1, Accum::Replace)),
                &mut g1,
                Some(&mut gb1),
                &mut partial,
                &mut c1,
                &x[n * s.input_len()..][..s.input_len()],
                &w,
                &y1,
                &mut go[n * s.output_len()..][..s.output_len()].to_vec(),
                Activation::Relu,
                1,
            );
            assert_close(&gx1, &gx[n * s.input_len()..][..s.input_len()], 1e-12);
            for (a, b) in gw_serial.iter_mut().zip(&g1) {
                *a += b;
            }
            for (a, b) in gb_serial.iter_mut().zip(&gb1) {
                *a += b;
            }
        }
        assert_close(&gb, &gb_serial, 1e-10);
        assert_close(&gw, &gw_serial, 1e-10);
    }

    #[test]
    #[cfg_attr(
        not(kiln_host_avx512),
        ignore = "no AVX-512F on this machine: the thin (K = 9) and sparse convolution kernels cannot run here"
    )]
    fn the_avx512_convolution_paths_match_the_generic_f64_path_on_random_shapes() {
        #[cfg(target_arch = "x86_64")]
        assert!(crate::simd::has_avx512());
        // Thin: one input channel, 3x3, output channels in blocks of eight, image
        // sizes whose pixel counts straddle the 16-wide blocks, random ones too.
        for (i, side) in sizes(&[4, 8, 16], 6, 30, 61)
            .into_iter()
            .filter(|&n| n >= 3)
            .enumerate()
        {
            let s = shape(
                1,
                (side, side + i % 3),
                8 * (1 + i % 4),
                (3, 3),
                (1, 1),
                (0, 0),
                (1, 1),
            );
            f32_agrees_with_f64(&s, 1 + i % 3, 62 + i as u64);
        }
        // Sparse backward: its geometry (input channels in whole vectors of 16, no
        // padding) with one to four vectors of channels, 3x3 and 2x2 taps and random
        // spatial sizes, a gradient at one position in five; the sparse path must be
        // the one taken.
        for (i, side) in sizes(&[8], 6, 14, 71)
            .into_iter()
            .filter(|&n| n >= 4)
            .enumerate()
        {
            let taps = if i % 2 == 0 { (3, 3) } else { (2, 2) };
            let s = shape(
                16 * (1 + i % 4),
                (side, side + 1),
                4 + i % 5,
                taps,
                (1, 1),
                (0, 0),
                (1, 1),
            );
            assert!(sparse::applies::<f32>(&s), "{s:?}");
            assert!(
                sparse_f32_agrees_with_f64(&s, 2, 72 + i as u64),
                "sparse path not taken for {s:?}"
            );
        }
    }

    #[test]
    #[cfg_attr(
        not(kiln_host_avx2),
        ignore = "no AVX2 and FMA on this machine: the direct convolution kernels cannot run here"
    )]
    fn the_direct_convolution_matches_the_generic_f64_path() {
        // At the widest vectors the processor has, or at AVX2's under `KILN_SIMD=avx2`
        // (which the test below runs).
        let capped = crate::simd::cap::from_env() == crate::simd::cap::Cap::Avx2;
        let vector = direct::width().expect("the direct kernels need AVX2 and FMA");
        assert!(!capped || vector == 8, "KILN_SIMD=avx2, yet {vector} lanes");
        // ResNet-20's first convolution and a stage-1 one; output channels off the
        // tiles of eight; an odd count of blocks of sixteen (5x5 taps); 1x1 and 3x1 taps
        // without padding; 2x3 taps with padding, whose output is a row taller than its
        // input.
        let cases = [
            (shape(3, (32, 32), 16, (3, 3), (1, 1), (1, 1), (1, 1)), 3),
            (shape(16, (32, 32), 16, (3, 3), (1, 1), (1, 1), (1, 1)), 2),
            (shape(5, (7, 16), 11, (3, 3), (1, 1), (1, 1), (1, 1)), 3),
            (shape(4, (9, 48), 3, (5, 5), (1, 1), (2, 2), (1, 1)), 2),
            (shape(12, (6, 16), 9, (1, 1), (1, 1), (0, 0), (1, 1)), 2),
            (shape(3, (8, 32), 5, (3, 1), (1, 1), (0, 0), (1, 1)), 1),
            (shape(2, (5, 16), 4, (2, 3), (1, 1), (1, 1), (1, 1)), 2),
        ];
        // Rows narrower than 16 (channels in lanes with AVX-512; with AVX2 the 8 x 8
        // planes are rows of one block): ResNet-20's third stage; 80 output channels (a
        // group of 64 and one of 16) over 90 positions (a tile of 2 at the end); 32 over
        // 35 positions; 5x5 taps.
        let lanes = [
            (shape(64, (8, 8), 64, (3, 3), (1, 1), (1, 1), (1, 1)), 2),
            (shape(16, (9, 10), 80, (3, 3), (1, 1), (1, 1), (1, 1)), 2),
            (shape(16, (5, 7), 32, (3, 3), (1, 1), (1, 1), (1, 1)), 3),
            (shape(16, (3, 9), 16, (5, 5), (1, 1), (2, 2), (1, 1)), 2),
        ];
        // With AVX2's 8 lanes only: channels in odd counts of vectors of 8 (24 over 42
        // positions, 8 over 49), and 8 x 8 planes in rows of one block with output
        // channels off the tiles of six (16 = 6 + 6 + 4).
        let narrow_cases = [
            (shape(8, (6, 7), 24, (3, 3), (1, 1), (1, 1), (1, 1)), 2),
            (shape(24, (7, 7), 8, (3, 3), (1, 1), (1, 1), (1, 1)), 2),
            (shape(8, (8, 8), 16, (3, 3), (1, 1), (1, 1), (1, 1)), 3),
        ];
        let narrow_cases = if vector == 8 { &narrow_cases[..] } else { &[] };
        // Convolutions that keep their columns (channels in lanes at the stride, the
        // input gradient by GEMM and col2im): ResNet-20's stride-2 3x3; 2x2 taps at
        // stride 2 without padding (the input read in place); odd planes at stride 2;
        // strides (2, 1) and 3; "valid" 3x3 at stride 1. With 8 lanes, 8 input and 24
        // output channels.
        let strided = [
            (shape(16, (32, 32), 32, (3, 3), (2, 2), (1, 1), (1, 1)), 2),
            (shape(16, (32, 32), 32, (2, 2), (2, 2), (0, 0), (1, 1)), 2),
            (shape(32, (9, 11), 16, (3, 3), (2, 2), (1, 1), (1, 1)), 3),
            (shape(16, (7, 10), 16, (3, 3), (2, 1), (1, 1), (1, 1)), 2),
            (shape(16, (11, 13), 16, (5, 5), (3, 3), (2, 2), (1, 1)), 2),
            (shape(16, (8, 9), 32, (3, 3), (1, 1), (0, 0), (1, 1)), 3),
        ];
        let narrow_strided = [(shape(8, (9, 9), 24, (3, 3), (2, 2), (1, 1), (1, 1)), 2)];
        let narrow_strided = if vector == 8 {
            &narrow_strided[..]
        } else {
            &[]
        };
        // ResNet-20's 1x1 stride-2 projection keeps its columns, though it would fit
        // the channels-in-lanes kernels (measured slower there).
        let projection = shape(16, (32, 32), 32, (1, 1), (2, 2), (0, 0), (1, 1));
        let half = batch_half(4, 2.0 * (32 * projection.cols_len()) as f64);
        assert_eq!(direct::path::<f32>(&projection, half, 4), Path::Columns);
        let all = cases.iter().chain(&lanes).chain(narrow_cases);
        let all = all.chain(&strided).chain(narrow_strided);
        for (i, &(s, batch)) in all.enumerate() {
            // Rows a multiple of the vector wide take the rows kernels, the others
            // channels in lanes; convolutions that keep their columns, channels in
            // lanes at their stride.
            let half = batch_half(batch, 2.0 * (s.out_channels * s.cols_len()) as f64);
            if !s.rebuilds_columns() {
                let path = direct::path::<f32>(&s, half, batch);
                assert_eq!(path, Path::Strided, "{s:?}");
            } else if s.out_size.1.is_multiple_of(vector) {
                assert!(direct::applies::<f32>(&s), "{s:?}");
            } else {
                assert!(direct::lanes_apply::<f32>(&s), "{s:?}");
            }
            let seed = 90 + 10 * i as u64;
            let x = values(batch * s.input_len(), seed);
            let w = values(s.out_channels * s.k(), seed + 1);
            let bias = values(s.out_channels, seed + 2);
            let go = values(batch * s.output_len(), seed + 3);
            let gx0 = values(x.len(), seed + 4);
            for accum in [Accum::Add, Accum::Replace] {
                let single = passes(
                    &s,
                    batch,
                    [&narrow(&x), &narrow(&w), &narrow(&bias), &narrow(&go)],
                    Some((&narrow(&gx0), accum)),
                );
                let double = passes(&s, batch, [&x, &w, &bias, &go], Some((&gx0, accum)));
                for (got, want) in single.iter().zip(&double) {
                    assert_close(&widen(got), want, 1e-4);
                }
            }
        }
    }

    /// The test above again in a process of its own under `KILN_SIMD=avx2`: on a
    /// processor with AVX-512 the AVX2 kernels would otherwise never run.
    #[test]
    #[cfg_attr(
        not(kiln_host_avx2),
        ignore = "no AVX2 and FMA on this machine: the direct convolution kernels cannot run here"
    )]
    fn the_direct_convolution_at_avx2_width_matches_the_generic_f64_path() {
        let name = "layers::conv::tests::the_direct_convolution_matches_the_generic_f64_path";
        let out = std::process::Command::new(std::env::current_exe().expect("the test binary"))
            .args([name, "--exact", "--test-threads=1"])
            .env("KILN_SIMD", "avx2")
            .output()
            .expect("the test binary runs again");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("test result: ok. 1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn sparse_gradients_agree_with_the_gemms() {
        // The benchmark CNN's second convolution (its batch split in halves), strides
        // and dilation with a ragged field (3 x 2 taps of 16 channels), and 2 x 2 taps
        // of 48 channels (twelve vectors, one block). A gradient at one position in five, as after a
        // pool, and the ReLU's zeros: the sparse path in f32 where the processor has
        // AVX-512; f64 always takes the GEMMs.
        let cases = [
            (shape(32, (13, 13), 64, (3, 3), (1, 1), (0, 0), (1, 1)), 64),
            (shape(16, (9, 8), 5, (3, 2), (2, 1), (0, 0), (1, 2)), 3),
            (shape(48, (6, 6), 8, (2, 2), (1, 1), (0, 0), (1, 1)), 2),
        ];
        for (s, batch) in cases {
            let taken = sparse_f32_agrees_with_f64(&s, batch, 41);
            #[cfg(target_arch = "x86_64")]
            assert_eq!(
                taken,
                crate::simd::has_avx512(),
                "sparse path taken for {s:?}"
            );
            let _ = taken;
        }
    }
}
