//! Convolution gradients when the output gradient is mostly zeros.
//!
//! A convolution followed by a ReLU and a 2x2 max pool gets a gradient at one position
//! of each pooling window at most: the benchmark CNN's second convolution sees at most
//! 1,600 non-zero values out of its 7,744 per sample (21 %), fewer where the ReLU is off.
//! Its two backward GEMMs (`g · colᵀ` and `Wᵀ · g`) spend four fifths of their
//! multiply-adds on those zeros. Here each non-zero `g[c, p]` is taken once instead:
//!
//! - weight gradient: `gw[c, :] += g[c, p] · field(p)`, the receptive field of output
//!   position `p` read straight from the input;
//! - input gradient: `field(p) += g[c, p] · w[c, :]`, a stamp of the filter onto the
//!   input gradient (no column gradient, no col2im).
//!
//! Both want the field's values contiguous, so the sample's input (and its gradient)
//! is held channels-last (`[h, w, channels]`) and the filters tap-major
//! (`[out, kh, kw, in]`): a field is then `kh · kw` runs of `in_channels` values, 16 to
//! an AVX-512 register. A sample's non-zeros are listed with masked compress, per output
//! channel (with the offset of their field in the channels-last input) for the weight
//! gradient, then per output position (with the offset of their channel's filter) for
//! the input gradient, whose sum over channels then stays in registers and is added to
//! the field once. Layout changes are 16 x 16 register transposes.
//!
//! The kernels are f32 with AVX-512 and need no padding and `in_channels` a multiple
//! of 16; [`applies`] says whether a convolution qualifies, the caller counts the
//! non-zeros and takes this path below [`MAX_DENSITY`]. Every scratch buffer lives in
//! the room of one sample's column matrix (this path builds no columns) and in
//! `partial`, so the path allocates nothing.

use std::any::TypeId;

use crate::Float;
use kiln_shapes::Conv2dShape;

/// The largest fraction of non-zero output gradients taken this way. The kernels' cost
/// grows with the non-zeros (`2 · K / 16` vector multiply-adds each, one load apiece),
/// the GEMMs' does not: on the benchmark CNN's second convolution at 21 % non-zero
/// (batch 64) this path took 1.73 ms against 3.46 ms for the GEMMs (`cargo bench
/// --bench cnn_kernels`, fastest of 200 calls, each after a 9 MB copy that leaves the
/// caches cold). Scaled up linearly that is about 4.1 ms at one half, above the
/// GEMMs, but part of the 1.73 ms (layout changes, the activation derivative, the bias
/// sum) does not grow with the non-zeros; the threshold is an estimate between those,
/// not measured at other densities.
pub(crate) const MAX_DENSITY: f64 = 0.5;

/// Vectors of 16 values in a receptive field, at most (`K ≤ 1024`).
const MAX_VECTORS: usize = 64;

/// Values of slack before a buffer so that it can start on a 64-byte line.
const ALIGN: usize = 16;

/// Per-sample scratch, in values: the channels-last input (later its gradient), then
/// lists of the non-zeros, by output channel for the weight gradient (a count, `p`
/// offsets and `p` values each) and then, in the same place, by output position for
/// the input gradient (a count, `out_channels` filter offsets and values each).
fn sample_scratch(s: &Conv2dShape) -> usize {
    let (co, p) = (s.out_channels, s.p());
    ALIGN + s.input_len() + (co * (1 + 2 * p)).max(p * (1 + 2 * co))
}

/// The part of `buffer` from its first 64-byte boundary: the kernels' vectors then never
/// straddle two cache lines.
pub(crate) fn aligned<T>(buffer: &mut [T]) -> &mut [T] {
    let skip = buffer.as_ptr().align_offset(64).min(buffer.len());
    &mut buffer[skip..]
}

/// Whether [`backward`] can take this convolution (type, processor, geometry, and room
/// in the column matrix for the scratch).
pub(crate) fn applies<T: Float>(s: &Conv2dShape) -> bool {
    let vectors = s.k() / 16;
    let fits =
        fields_inside(s) && s.input_len() <= u32::MAX as usize && sample_scratch(s) <= s.cols_len();
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>()
        && s.padding == (0, 0)
        && s.in_channels.is_multiple_of(16)
        && (1..=MAX_VECTORS).contains(&vectors)
        && fits
        && crate::simd::has_avx512()
    {
        return true;
    }
    let _ = (vectors, fits);
    false
}

/// Whether every receptive field lies inside the input (without padding): the kernels
/// read them unchecked.
fn fields_inside(s: &Conv2dShape) -> bool {
    let inside = |out: usize, stride: usize, kernel: usize, dilation: usize, size: usize| {
        out >= 1 && kernel >= 1 && (out - 1) * stride + (kernel - 1) * dilation < size
    };
    let (o, st, k, d, i) = (s.out_size, s.stride, s.kernel, s.dilation, s.in_size);
    inside(o.0, st.0, k.0, d.0, i.0) && inside(o.1, st.1, k.1, d.1, i.1)
}

/// Gradients of the samples of `input` from their pre-activation output gradient `g`.
///
/// `scratch` is one sample's column matrix, reused by each sample in turn, `filters`
/// the weight tap-major ([`to_tap_major`]), and `grad_weight` (tap-major) is replaced
/// by these samples' weight gradient. `grad_input`, if asked for, is replaced or accumulated.
///
/// # Panics
/// If [`applies`] is false or a buffer's length does not match.
pub(crate) fn backward<T: Float>(
    s: &Conv2dShape,
    grad_input: Option<(&mut [T], bool)>,
    grad_weight: &mut [T],
    scratch: &mut [T],
    input: &[T],
    filters: &[T],
    g: &[T],
) {
    assert!(applies::<T>(s), "the sparse path does not apply");
    let batch = g.len() / s.output_len();
    assert_eq!(g.len(), batch * s.output_len());
    assert_eq!(input.len(), batch * s.input_len());
    assert_eq!(scratch.len(), s.cols_len());
    assert_eq!(grad_weight.len(), s.out_channels * s.k());
    assert_eq!(filters.len(), s.out_channels * s.k());
    #[cfg(target_arch = "x86_64")]
    {
        use super::{as_f32, as_f32_mut};
        let grad_input = grad_input.map(|(gi, add)| {
            assert_eq!(gi.len(), batch * s.input_len());
            // SAFETY: `applies` checked that `T` is `f32`.
            (unsafe { as_f32_mut(gi) }, add)
        });
        // SAFETY: `applies` checked that `T` is `f32` and that the processor has
        // AVX-512F.
        unsafe {
            x86::backward(
                s,
                grad_input,
                as_f32_mut(grad_weight),
                as_f32_mut(scratch),
                as_f32(input),
                as_f32(filters),
                as_f32(g),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (grad_input, grad_weight, scratch, input, filters, g);
}

/// `dst = srcᵀ` for the row-major `rows x cols` matrix `src`: 16 x 16 register
/// transposes for f32 on AVX-512 with `rows` a multiple of 16, faer's strided copy
/// otherwise (which moves one value at a time).
pub(crate) fn transpose<T: Float>(dst: &mut [T], src: &[T], rows: usize, cols: usize) {
    assert_eq!(src.len(), rows * cols);
    assert_eq!(dst.len(), rows * cols);
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && rows.is_multiple_of(16)
        && crate::simd::has_avx512()
    {
        use super::{as_f32, as_f32_mut};
        // SAFETY: `T` is `f32` (same type id) and the processor has AVX-512F.
        unsafe { x86::transpose_into(as_f32_mut(dst), as_f32(src), rows, cols, false) };
        return;
    }
    faer::MatMut::from_row_major_slice_mut(dst, cols, rows)
        .copy_from(faer::MatRef::from_row_major_slice(src, rows, cols).transpose());
}

/// Calls of the sparse path on this thread, for tests that must know it ran.
#[cfg(test)]
pub(crate) mod taken {
    use std::cell::Cell;

    thread_local! {
        static CALLS: Cell<usize> = const { Cell::new(0) };
    }

    /// Counts one call.
    pub(crate) fn note() {
        CALLS.with(|c| c.set(c.get() + 1));
    }

    /// Calls so far on this thread.
    pub(crate) fn count() -> usize {
        CALLS.with(Cell::get)
    }
}

/// `partial` ([`Conv2dShape::partial_len`] values) as the tap-major filters, on a
/// 64-byte line, and two tap-major weight gradients.
pub(crate) fn split_partial<'a, T>(
    s: &Conv2dShape,
    partial: &'a mut [T],
) -> (&'a mut [T], &'a mut [T], &'a mut [T]) {
    let len = s.out_channels * s.k();
    let (filters, rest) = partial.split_at_mut(len + ALIGN);
    let (a, b) = rest.split_at_mut(len);
    (&mut aligned(filters)[..len], a, &mut b[..len])
}

/// `[out, in, kh, kw]` (the weight's layout) to `[out, kh, kw, in]`.
pub(crate) fn to_tap_major<T: Float>(s: &Conv2dShape, dst: &mut [T], weight: &[T]) {
    let (ci, taps) = (s.in_channels, s.kernel.0 * s.kernel.1);
    for (d, w) in dst.chunks_exact_mut(s.k()).zip(weight.chunks_exact(s.k())) {
        for c in 0..ci {
            for t in 0..taps {
                d[t * ci + c] = w[c * taps + t];
            }
        }
    }
}

/// `dst = a + b` from `[out, kh, kw, in]` back to the weight's `[out, in, kh, kw]`.
pub(crate) fn sum_from_tap_major<T: Float>(s: &Conv2dShape, dst: &mut [T], a: &[T], b: &[T]) {
    let (ci, taps) = (s.in_channels, s.kernel.0 * s.kernel.1);
    for ((d, a), b) in dst
        .chunks_exact_mut(s.k())
        .zip(a.chunks_exact(s.k()))
        .zip(b.chunks_exact(s.k()))
    {
        for c in 0..ci {
            for t in 0..taps {
                d[c * taps + t] = a[t * ci + c] + b[t * ci + c];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{aligned, sample_scratch, Conv2dShape, ALIGN, MAX_VECTORS};

    /// The lowest `n` of 16 lanes.
    fn mask(n: usize) -> __mmask16 {
        (((1u32 << n) - 1) & 0xffff) as __mmask16
    }

    /// `0, step, 2·step, …, 15·step`.
    #[target_feature(enable = "avx512f")]
    fn lanes(step: usize) -> __m512i {
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        _mm512_mullo_epi32(lanes, _mm512_set1_epi32(step as i32))
    }

    /// Vectors a kernel holds in registers at most: twelve accumulators, a broadcast
    /// and room for the loads in AVX-512's 32 registers.
    const MAX_BLOCK: usize = 12;

    /// The next block of a field with `left` vectors to go: the blocks as even as
    /// possible, so that none is so short that its multiply-adds wait on each other
    /// (a block of `n` gives `n` independent chains, and an FMA takes four cycles).
    fn block(left: usize) -> usize {
        left.div_ceil(left.div_ceil(MAX_BLOCK))
    }

    /// The blocks of a field of `vectors` vectors, as ranges of its vectors.
    fn blocks(vectors: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
        let mut first = 0;
        std::iter::from_fn(move || {
            (first < vectors).then(|| {
                let n = block(vectors - first);
                first += n;
                first - n..first
            })
        })
    }

    /// `kernel::<n>(args)` for a block of `n ≤ MAX_BLOCK` vectors.
    macro_rules! by_block {
        ($n:expr, $kernel:ident($($arg:expr),* $(,)?)) => {
            match $n {
                1 => $kernel::<1>($($arg),*),
                2 => $kernel::<2>($($arg),*),
                3 => $kernel::<3>($($arg),*),
                4 => $kernel::<4>($($arg),*),
                5 => $kernel::<5>($($arg),*),
                6 => $kernel::<6>($($arg),*),
                7 => $kernel::<7>($($arg),*),
                8 => $kernel::<8>($($arg),*),
                9 => $kernel::<9>($($arg),*),
                10 => $kernel::<10>($($arg),*),
                11 => $kernel::<11>($($arg),*),
                12 => $kernel::<12>($($arg),*),
                _ => unreachable!("blocks have at most {MAX_BLOCK} vectors"),
            }
        };
    }

    /// Lists of non-zeros: `slots` of a count and up to `len` offsets and values each.
    struct Lists<'a> {
        len: usize,
        counts: &'a mut [u32],
        offsets: &'a mut [u32],
        values: &'a mut [f32],
    }

    impl<'a> Lists<'a> {
        fn new(buffer: &'a mut [f32], slots: usize, len: usize) -> Self {
            let (counts, rest) = buffer.split_at_mut(slots);
            let (offsets, rest) = rest.split_at_mut(slots * len);
            // SAFETY: u32 and f32 have the same size and alignment, and every bit
            // pattern is valid for both.
            let as_u32 = |v: &'a mut [f32]| unsafe {
                std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u32>(), v.len())
            };
            Lists {
                len,
                counts: as_u32(counts),
                offsets: as_u32(offsets),
                values: &mut rest[..slots * len],
            }
        }

        /// The offsets and values listed in `slot`.
        fn slot(&self, slot: usize) -> (&[u32], &[f32]) {
            let count = self.counts[slot] as usize;
            (
                &self.offsets[slot * self.len..][..count],
                &self.values[slot * self.len..][..count],
            )
        }

        /// Appends the lanes of `values` (with `offsets`) that are non-zero under `m`
        /// to `slot`, which has `count` entries; returns the new count. NaN counts as
        /// non-zero, so it propagates.
        #[target_feature(enable = "avx512f")]
        fn push(
            &mut self,
            slot: usize,
            count: usize,
            m: __mmask16,
            values: __m512,
            offsets: __m512i,
        ) -> usize {
            let nonzero = _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(m, values, _mm512_setzero_ps());
            let taken = nonzero.count_ones() as usize;
            assert!(count + taken <= self.len);
            let at = slot * self.len + count;
            // SAFETY: the `taken` lanes stored land at `at..at + taken`, inside the
            // slot (checked above). A masked compress-and-store to memory is slow on
            // some processors; compressing in a register and a masked store is not.
            unsafe {
                _mm512_mask_storeu_ps(
                    self.values.as_mut_ptr().add(at),
                    mask(taken),
                    _mm512_maskz_compress_ps(nonzero, values),
                );
                _mm512_mask_storeu_epi32(
                    self.offsets.as_mut_ptr().add(at).cast(),
                    mask(taken),
                    _mm512_maskz_compress_epi32(nonzero, offsets),
                );
            }
            count + taken
        }
    }

    /// [`super::backward`] for f32: per sample, the channels-last input and the lists
    /// by channel, the weight gradient (added over the samples), then, if asked for,
    /// the lists by position and the input gradient.
    #[target_feature(enable = "avx512f")]
    pub(super) fn backward(
        s: &Conv2dShape,
        mut grad_input: Option<(&mut [f32], bool)>,
        grad_weight: &mut [f32],
        scratch: &mut [f32],
        input: &[f32],
        filters: &[f32],
        g: &[f32],
    ) {
        let (ilen, olen) = (s.input_len(), s.output_len());
        let ci = s.in_channels;
        let vectors = s.k() / 16;
        // Offset of each vector of a receptive field from its top-left corner, in a
        // channels-last sample.
        let mut field = [0u32; MAX_VECTORS];
        let (kh, kw) = s.kernel;
        for i in 0..kh {
            for j in 0..kw {
                for b in 0..ci / 16 {
                    let q = (i * kw + j) * (ci / 16) + b;
                    let at = (i * s.dilation.0 * s.in_size.1 + j * s.dilation.1) * ci + b * 16;
                    field[q] = at as u32;
                }
            }
        }
        let field = &field[..vectors];
        let scratch = &mut scratch[..sample_scratch(s)];
        for n in 0..g.len() / olen {
            let skip = ALIGN - aligned(&mut scratch[..ALIGN]).len();
            let (xs, lists) = scratch[skip..].split_at_mut(ilen);
            let g = &g[n * olen..][..olen];
            to_channels_last(s, xs, &input[n * ilen..][..ilen]);
            let mut by_channel = Lists::new(lists, s.out_channels, s.p());
            gather_by_channel(s, &mut by_channel, g);
            weight_grad(s, grad_weight, xs, &by_channel, field, n > 0);
            if let Some((gi, add)) = grad_input.as_mut() {
                let mut by_position = Lists::new(lists, s.p(), s.out_channels);
                gather_by_position(s, &mut by_position, g);
                xs.fill(0.0);
                input_grad(s, xs, &by_position, filters, field);
                from_channels_last(s, &mut gi[n * ilen..][..ilen], xs, *add);
            }
        }
    }

    /// Transposes the 16 x 16 block in `rows`: lane `j` of row `i` to lane `i` of
    /// row `j`, by interleaving pairs, then pairs of pairs, then 128-bit quarters.
    #[target_feature(enable = "avx512f")]
    fn transpose(rows: &mut [__m512; 16]) {
        let r = *rows;
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
            let pd = _mm512_castps_pd;
            u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(a), pd(c)));
            u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(a), pd(c)));
            u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(b), pd(d)));
            u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(b), pd(d)));
        }
        // Row `4·i + j` of `u` holds column `j` (and `j + 4`, `j + 8`, `j + 12`) of
        // rows `4·i .. 4·i + 4`, one 128-bit quarter each.
        for h in 0..2 {
            for j in 0..4 {
                let (a, b) = (u[8 * h + j], u[8 * h + 4 + j]);
                t[8 * h + j] = _mm512_shuffle_f32x4::<0x88>(a, b);
                t[8 * h + 4 + j] = _mm512_shuffle_f32x4::<0xdd>(a, b);
            }
        }
        for j in 0..8 {
            rows[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[8 + j]);
            rows[8 + j] = _mm512_shuffle_f32x4::<0xdd>(t[j], t[8 + j]);
        }
    }

    /// Transposes a `rows x cols` row-major matrix into `dst` (`cols x rows`),
    /// replacing or adding; `rows` is a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) fn transpose_into(
        dst: &mut [f32],
        src: &[f32],
        rows: usize,
        cols: usize,
        add: bool,
    ) {
        assert!(rows.is_multiple_of(16) && src.len() == rows * cols && dst.len() == src.len());
        for r0 in (0..rows).step_by(16) {
            let mut c0 = 0;
            while c0 < cols {
                let m = mask((cols - c0).min(16));
                let mut block = [_mm512_setzero_ps(); 16];
                for (i, b) in block.iter_mut().enumerate() {
                    // SAFETY: masked lanes of row `r0 + i`, columns `c0..` inside it.
                    *b =
                        unsafe { _mm512_maskz_loadu_ps(m, src.as_ptr().add((r0 + i) * cols + c0)) };
                }
                transpose(&mut block);
                for (j, &b) in block.iter().enumerate().take((cols - c0).min(16)) {
                    // SAFETY: 16 values of row `c0 + j` of `dst`, from column `r0`.
                    unsafe {
                        let at = dst.as_mut_ptr().add((c0 + j) * rows + r0);
                        let v = if add {
                            _mm512_add_ps(b, _mm512_loadu_ps(at))
                        } else {
                            b
                        };
                        _mm512_storeu_ps(at, v);
                    }
                }
                c0 += 16;
            }
        }
    }

    /// `[c, h, w]` to `[h, w, c]`.
    #[target_feature(enable = "avx512f")]
    fn to_channels_last(s: &Conv2dShape, dst: &mut [f32], src: &[f32]) {
        let hw = s.in_size.0 * s.in_size.1;
        transpose_into(dst, src, s.in_channels, hw, false);
    }

    /// `[h, w, c]` back to `[c, h, w]`, replacing or adding.
    #[target_feature(enable = "avx512f")]
    fn from_channels_last(s: &Conv2dShape, dst: &mut [f32], src: &[f32], add: bool) {
        let (ci, hw) = (s.in_channels, s.in_size.0 * s.in_size.1);
        // Positions in blocks of 16 (the last one masked), all channels of each.
        let mut q0 = 0;
        while q0 < hw {
            let m = mask((hw - q0).min(16));
            for c0 in (0..ci).step_by(16) {
                let mut block = [_mm512_setzero_ps(); 16];
                for (i, b) in block.iter_mut().enumerate().take((hw - q0).min(16)) {
                    // SAFETY: 16 channels of position `q0 + i`, inside `src`.
                    *b = unsafe { _mm512_loadu_ps(src.as_ptr().add((q0 + i) * ci + c0)) };
                }
                transpose(&mut block);
                for (j, &b) in block.iter().enumerate() {
                    // SAFETY: masked lanes of channel `c0 + j`'s plane from `q0`.
                    unsafe {
                        let at = dst.as_mut_ptr().add((c0 + j) * hw + q0);
                        let v = if add {
                            _mm512_add_ps(b, _mm512_maskz_loadu_ps(m, at))
                        } else {
                            b
                        };
                        _mm512_mask_storeu_ps(at, m, v);
                    }
                }
            }
            q0 += 16;
        }
    }

    /// Lists each output channel's non-zero gradients with the offset of their
    /// receptive field in the channels-last input.
    #[target_feature(enable = "avx512f")]
    fn gather_by_channel(s: &Conv2dShape, lists: &mut Lists<'_>, g: &[f32]) {
        let (p, (oh, ow)) = (s.p(), s.out_size);
        let ci = s.in_channels;
        let row_step = s.stride.0 * s.in_size.1 * ci;
        let along = lanes(s.stride.1 * ci);
        for (c, row) in g.chunks_exact(p).enumerate() {
            let mut count = 0;
            for oy in 0..oh {
                let mut ox = 0;
                while ox < ow {
                    let m = mask((ow - ox).min(16));
                    // SAFETY: masked lanes inside row `oy` of channel `c`.
                    let v = unsafe { _mm512_maskz_loadu_ps(m, row.as_ptr().add(oy * ow + ox)) };
                    let at = oy * row_step + ox * s.stride.1 * ci;
                    let at = _mm512_add_epi32(_mm512_set1_epi32(at as i32), along);
                    count = lists.push(c, count, m, v, at);
                    ox += 16;
                }
            }
            lists.counts[c] = count as u32;
        }
    }

    /// Lists each output position's non-zero gradients with the offset of their
    /// channel's filter.
    #[target_feature(enable = "avx512f")]
    fn gather_by_position(s: &Conv2dShape, lists: &mut Lists<'_>, g: &[f32]) {
        let (p, co, k) = (s.p(), s.out_channels, s.k());
        let across = lanes(p);
        let filter = lanes(k);
        for q in 0..p {
            let mut count = 0;
            let mut c = 0;
            while c < co {
                let m = mask((co - c).min(16));
                // SAFETY: lanes `(c + l)·p + q` for the channels under `m`.
                let v = unsafe {
                    _mm512_mask_i32gather_ps::<4>(
                        _mm512_setzero_ps(),
                        m,
                        across,
                        g.as_ptr().add(c * p + q),
                    )
                };
                let at = _mm512_add_epi32(_mm512_set1_epi32((c * k) as i32), filter);
                count = lists.push(q, count, m, v, at);
                c += 16;
            }
            lists.counts[q] = count as u32;
        }
    }

    /// `grad_weight[c, :] (+)= Σ g[c, p] · field(p)` over the sample's non-zeros, a
    /// block of vectors held in registers at a time.
    #[target_feature(enable = "avx512f")]
    fn weight_grad(
        s: &Conv2dShape,
        grad_weight: &mut [f32],
        xs: &[f32],
        lists: &Lists<'_>,
        field: &[u32],
        add: bool,
    ) {
        for vectors in blocks(field.len()) {
            let (first, n) = (vectors.start, vectors.len());
            let field = &field[vectors];
            by_block!(
                n,
                weight_grad_block(s, grad_weight, xs, lists, field, first, add)
            );
        }
    }

    #[target_feature(enable = "avx512f")]
    fn weight_grad_block<const N: usize>(
        s: &Conv2dShape,
        grad_weight: &mut [f32],
        xs: &[f32],
        lists: &Lists<'_>,
        field: &[u32],
        first: usize,
        add: bool,
    ) {
        let k = s.k();
        let at: [usize; N] = std::array::from_fn(|v| field[v] as usize);
        for c in 0..s.out_channels {
            let dst = &mut grad_weight[c * k + first * 16..][..N * 16];
            let mut acc = [_mm512_setzero_ps(); N];
            if add {
                for (v, a) in acc.iter_mut().enumerate() {
                    // SAFETY: vector `v` of the block, inside `dst`.
                    *a = unsafe { _mm512_loadu_ps(dst.as_ptr().add(v * 16)) };
                }
            }
            let (offsets, values) = lists.slot(c);
            for (&o, &g) in offsets.iter().zip(values) {
                let g = _mm512_set1_ps(g);
                for (a, &at) in acc.iter_mut().zip(&at) {
                    // SAFETY: the field of an output position lies inside the input
                    // (no padding; `applies` checked the geometry).
                    let x = unsafe { _mm512_loadu_ps(xs.as_ptr().add(o as usize + at)) };
                    *a = _mm512_fmadd_ps(g, x, *a);
                }
            }
            for (v, a) in acc.iter().enumerate() {
                // SAFETY: vector `v` of the block, inside `dst`.
                unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(v * 16), *a) };
            }
        }
    }

    /// `field(p) += Σ_c g[c, p] · filters[c, :]` into the channels-last input
    /// gradient: the sum over a position's non-zeros in registers, then added once.
    #[target_feature(enable = "avx512f")]
    fn input_grad(
        s: &Conv2dShape,
        gxs: &mut [f32],
        lists: &Lists<'_>,
        filters: &[f32],
        field: &[u32],
    ) {
        let (ow, ci) = (s.out_size.1, s.in_channels);
        for q in 0..s.p() {
            let (offsets, values) = lists.slot(q);
            if offsets.is_empty() {
                continue;
            }
            let (oy, ox) = (q / ow, q % ow);
            let corner = (oy * s.stride.0 * s.in_size.1 + ox * s.stride.1) * ci;
            for vectors in blocks(field.len()) {
                let (first, n) = (vectors.start, vectors.len());
                let field = &field[vectors];
                by_block!(
                    n,
                    input_grad_block(gxs, offsets, values, filters, field, corner, first)
                );
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    fn input_grad_block<const N: usize>(
        gxs: &mut [f32],
        offsets: &[u32],
        values: &[f32],
        filters: &[f32],
        field: &[u32],
        corner: usize,
        first: usize,
    ) {
        let mut acc = [_mm512_setzero_ps(); N];
        for (&o, &g) in offsets.iter().zip(values) {
            let g = _mm512_set1_ps(g);
            for (v, a) in acc.iter_mut().enumerate() {
                // SAFETY: vector `first + v` of filter `o / k`, inside `filters`.
                let w =
                    unsafe { _mm512_loadu_ps(filters.as_ptr().add(o as usize + (first + v) * 16)) };
                *a = _mm512_fmadd_ps(g, w, *a);
            }
        }
        for (a, &at) in acc.iter().zip(field) {
            // SAFETY: as in `weight_grad_block`, inside the input gradient.
            unsafe {
                let dst = gxs.as_mut_ptr().add(corner + at as usize);
                _mm512_storeu_ps(dst, _mm512_add_ps(*a, _mm512_loadu_ps(dst)));
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::testing::values;

    #[test]
    fn block_transposes_match_the_definition() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        // Whole blocks, a ragged last block of columns, and a single column.
        for (rows, cols) in [(16, 16), (32, 169), (16, 7), (48, 1)] {
            let src: Vec<f32> = values(rows * cols, 9).iter().map(|&v| v as f32).collect();
            let before: Vec<f32> = values(rows * cols, 10).iter().map(|&v| v as f32).collect();
            for add in [false, true] {
                let mut dst = before.clone();
                // SAFETY: the processor has AVX-512F.
                unsafe { super::x86::transpose_into(&mut dst, &src, rows, cols, add) };
                for r in 0..rows {
                    for c in 0..cols {
                        let base = if add { before[c * rows + r] } else { 0.0 };
                        assert_eq!(dst[c * rows + r], base + src[r * cols + c], "{rows}x{cols}");
                    }
                }
            }
        }
    }

    #[test]
    fn transpose_matches_the_definition_on_both_paths() {
        // f32 with 16-row blocks (the register path on AVX-512), f32 with ragged rows
        // and f64 (faer's copy).
        for (rows, cols) in [(512, 64), (48, 5), (12, 7)] {
            let src = values(rows * cols, 11);
            let src32: Vec<f32> = src.iter().map(|&v| v as f32).collect();
            let mut dst = vec![f64::NAN; src.len()];
            let mut dst32 = vec![f32::NAN; src.len()];
            super::transpose(&mut dst, &src, rows, cols);
            super::transpose(&mut dst32, &src32, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * rows + r], src[r * cols + c], "{rows}x{cols}");
                    assert_eq!(dst32[c * rows + r], src32[r * cols + c], "{rows}x{cols}");
                }
            }
        }
    }
}
