//! The recurrent layers' per-step product: a few rows times a weight matrix packed in
//! panels of 16 columns.
//!
//! Each step of a recurrent layer adds `h_{t-1} · Wₕₕᵀ` onto the gates (forward) and
//! `dgates · Wₕₕ` onto the previous hidden-state gradient (backward), for as many rows
//! as a thread has samples: 16 in the T5 benchmark (LSTM 128, batch 32 on two
//! threads), against 128 × 512 or 512 × 128 weights. faer runs these at 74–78 GFLOP/s
//! on one Zen 4 core. The kernel here runs them at 85–87 (a scratch program timing
//! both on the same shapes, not in the repo; docs/design.md, "Recurrent layers"): the
//! weight is packed once per pass into `n / 16` panels of `k × 16` values, each panel
//! read in order from the L1 cache while a tile of 6 rows × 16 columns keeps twelve
//! AVX2 accumulators in registers (two loads and six broadcasts per twelve fused
//! multiply-adds, BLIS's shape for AVX2).
//!
//! On a processor with AVX-512 a panel is one register wide, and a tile of 8 rows takes
//! two panels side by side (sixteen accumulators, two loads and eight broadcasts per
//! sixteen FMAs). On one Zen 5 core (EPYC, family 26) it ran at 196–279 GFLOP/s
//! against faer's 93–269 on every shape timed (4 to 64 rows; `k × n` of 64 × 256 to
//! 1,024 × 4,096, T5's 128 × 512 and 512 × 128 among them: 269 and 270 against 213 and
//! 239 at 16 rows), faster on all but one (4 × 256 × 64: 235 against 240); a scratch
//! program, median of 15 batches of calls.
//!
//! It is used only where it was measured faster: f32, a processor with AVX2 + FMA (the
//! AVX-512 tile where it has AVX-512), a column count that is a multiple of 16, and at
//! most [`MAX_ROWS`] rows whose `lhs` part fits [`MAX_LHS`] values. With more rows the
//! AVX2 kernel reads each row of `lhs` once per panel, and faer, which blocks for the
//! caches, was faster (at 512 rows: 70 against 82 GFLOP/s). Everywhere else the callers
//! keep faer's product ([`Rhs::Plain`]).

use std::any::TypeId;

use faer::{Accum, MatMut, MatRef, Par};

use super::matmul;
#[cfg(target_arch = "x86_64")]
use super::{as_f32, as_f32_mut};
use crate::Float;

/// Columns in a panel: two AVX2 vectors of f32.
pub(crate) const PANEL: usize = 16;

/// Most rows the kernel takes: from 4 to 64 rows it was as fast as faer or faster on
/// every shape timed but one (2 % slower), within 6 % either way at 256 rows and slower
/// beyond.
pub(crate) const MAX_ROWS: usize = 64;

/// Most `rows · k` values of `lhs`: 64 rows of 1,024 or 16 rows of 4,096, the largest
/// timed and faster (an `lhs` of 2 MiB, 128 × 4,096, was slower).
pub(crate) const MAX_LHS: usize = 65_536;

/// Whether [`add_product`] with [`Rhs::Packed`] takes `rows × k` times `k × n` of `T`
/// on this processor.
pub(crate) fn applies<T: Float>(rows: usize, k: usize, n: usize) -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>()
        && n > 0
        && n.is_multiple_of(PANEL)
        && rows <= MAX_ROWS
        && rows * k <= MAX_LHS
        && crate::simd::has_avx2_fma()
}

/// The right-hand side of [`add_product`].
#[derive(Clone, Copy)]
pub(crate) enum Rhs<'a, T> {
    /// Packed by [`pack`]: `n / PANEL` panels of `k × PANEL` values, each row-major.
    Packed(&'a [T]),
    /// Any faer view, multiplied by faer.
    Plain(MatRef<'a, T>),
}

/// Packs the `k × n` matrix `B` into `dst` (`k · n` values) as [`Rhs::Packed`] reads it:
/// `B = src` read row-major (`k × n`), or, if `transposed`, `B = srcᵀ` with `src` a
/// row-major `n × k` matrix.
///
/// # Panics
/// If a length does not match or `n` is not a multiple of [`PANEL`].
pub(crate) fn pack<T: Copy>(dst: &mut [T], src: &[T], k: usize, n: usize, transposed: bool) {
    assert!(dst.len() == k * n && src.len() == k * n && n.is_multiple_of(PANEL));
    for (p, panel) in dst.chunks_exact_mut(k * PANEL).enumerate() {
        let first = p * PANEL;
        for (i, row) in panel.chunks_exact_mut(PANEL).enumerate() {
            if transposed {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = src[(first + j) * k + i];
                }
            } else {
                row.copy_from_slice(&src[i * n + first..][..PANEL]);
            }
        }
    }
}

/// `dst += lhs · rhs` for `rows` rows: row `r` of `lhs` is `lhs[r · lhs_stride..][..k]`,
/// row `r` of the result `dst[r · dst_stride..][..n]`.
///
/// # Panics
/// If the slices are too short for their rows, or a packed `rhs` is not `k · n` values
/// or was not meant to be used ([`applies`] is false).
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_product<T: Float>(
    dst: &mut [T],
    dst_stride: usize,
    lhs: &[T],
    lhs_stride: usize,
    rhs: Rhs<'_, T>,
    rows: usize,
    k: usize,
    n: usize,
) {
    if rows == 0 {
        return;
    }
    let dst = &mut dst[..(rows - 1) * dst_stride + n];
    let lhs = &lhs[..(rows - 1) * lhs_stride + k];
    match rhs {
        Rhs::Plain(rhs) => {
            // faer 0.24's `from_row_major_slice_with_stride_mut` swaps the strides (it
            // builds a column-major view), so the row-major view of `dst` is made as the
            // transpose of a column-major one, as faer's immutable constructor does.
            let dst = MatMut::from_column_major_slice_with_stride_mut(dst, n, rows, dst_stride)
                .transpose_mut();
            let lhs = MatRef::from_row_major_slice_with_stride(lhs, rows, k, lhs_stride);
            matmul(dst, Accum::Add, lhs, rhs, T::ONE, Par::Seq);
        }
        Rhs::Packed(panels) => {
            assert!(
                panels.len() == k * n && applies::<T>(rows, k, n),
                "packed product: {rows} x {k} x {n} is not the kernel's"
            );
            assert!(
                dst_stride >= n && lhs_stride >= k,
                "packed product: rows overlap"
            );
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `T` is `f32` and the processor has AVX2 and FMA (`applies`), and
            // AVX-512F where that kernel is chosen; the slices hold every row (cut
            // above), `n` is a multiple of 16 and `panels` is `k · n` values.
            unsafe {
                let (dst, lhs, panels) = (as_f32_mut(dst), as_f32(lhs), as_f32(panels));
                if crate::simd::widest_is_avx2() {
                    x86::add_product(dst, dst_stride, lhs, lhs_stride, panels, rows, k, n);
                } else {
                    x86::add_product_avx512(dst, dst_stride, lhs, lhs_stride, panels, rows, k, n);
                }
                crate::simd::clear_upper_vector_state();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::PANEL;

    /// Rows of the main tile.
    const TILE: usize = 6;

    /// [`super::add_product`] on packed panels.
    ///
    /// # Safety
    /// The processor must support AVX2 and FMA; `dst` must hold `rows` rows of `n`
    /// values `dst_stride` apart, `lhs` `rows` rows of `k` values `lhs_stride` apart,
    /// `panels` `k · n` values; `n` must be a multiple of [`PANEL`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn add_product(
        dst: &mut [f32],
        dst_stride: usize,
        lhs: &[f32],
        lhs_stride: usize,
        panels: &[f32],
        rows: usize,
        k: usize,
        n: usize,
    ) {
        let (c, a, b) = (dst.as_mut_ptr(), lhs.as_ptr(), panels.as_ptr());
        for p in 0..n / PANEL {
            // SAFETY (all below): every offset stays inside the slices, as the caller
            // guarantees their lengths.
            let (c, b) = unsafe { (c.add(p * PANEL), b.add(p * PANEL * k)) };
            let mut r = 0;
            while r + TILE <= rows {
                let (c, a) = unsafe { (c.add(r * dst_stride), a.add(r * lhs_stride)) };
                unsafe { tile::<TILE>(c, dst_stride, a, lhs_stride, b, k) };
                r += TILE;
            }
            let (c, a) = unsafe { (c.add(r * dst_stride), a.add(r * lhs_stride)) };
            unsafe {
                match rows - r {
                    0 => {}
                    1 => tile::<1>(c, dst_stride, a, lhs_stride, b, k),
                    2 => tile::<2>(c, dst_stride, a, lhs_stride, b, k),
                    3 => tile::<3>(c, dst_stride, a, lhs_stride, b, k),
                    4 => tile::<4>(c, dst_stride, a, lhs_stride, b, k),
                    _ => tile::<5>(c, dst_stride, a, lhs_stride, b, k),
                }
            }
        }
    }

    /// `R` rows × 16 columns: `c[r][0..16] += Σᵢ a[r][i] · b[i][0..16]`, the sums kept in
    /// `2 R` registers over the whole inner dimension.
    ///
    /// # Safety
    /// As [`add_product`], for these `R` rows and one panel `b` (`k` rows of 16).
    #[inline(always)]
    unsafe fn tile<const R: usize>(
        c: *mut f32,
        c_stride: usize,
        a: *const f32,
        a_stride: usize,
        b: *const f32,
        k: usize,
    ) {
        // SAFETY: the caller's guarantees cover every offset read and written.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for i in 0..k {
                let b0 = _mm256_loadu_ps(b.add(i * PANEL));
                let b1 = _mm256_loadu_ps(b.add(i * PANEL + 8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*a.add(r * a_stride + i));
                    acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                let row = c.add(r * c_stride);
                _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), acc[0]));
                let row = row.add(8);
                _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), acc[1]));
            }
        }
    }

    /// Rows of the AVX-512 kernel's main tile.
    const TILE_512: usize = 8;

    /// [`add_product`] with AVX-512 vectors: a panel is one register wide, so a tile
    /// takes two panels side by side (the last panel alone if their count is odd), 8
    /// rows × 32 columns in sixteen accumulators: two loads and eight broadcasts per
    /// sixteen fused multiply-adds.
    ///
    /// # Safety
    /// As [`add_product`], and the processor must support AVX-512F.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn add_product_avx512(
        dst: &mut [f32],
        dst_stride: usize,
        lhs: &[f32],
        lhs_stride: usize,
        panels: &[f32],
        rows: usize,
        k: usize,
        n: usize,
    ) {
        let (c, a, b) = (dst.as_mut_ptr(), lhs.as_ptr(), panels.as_ptr());
        let count = n / PANEL;
        let mut p = 0;
        while p < count {
            let wide = if p + 1 < count { 2 } else { 1 };
            // SAFETY (all below): every offset stays inside the slices, as the caller
            // guarantees their lengths; panel `p + 1` exists where `wide` is 2.
            let (c, b) = unsafe { (c.add(p * PANEL), b.add(p * PANEL * k)) };
            let mut r = 0;
            while r < rows {
                let (c, a) = unsafe { (c.add(r * dst_stride), a.add(r * lhs_stride)) };
                let left = rows - r;
                unsafe {
                    match (wide, left.min(TILE_512)) {
                        (2, 8) => tile_512::<8, 2>(c, dst_stride, a, lhs_stride, b, k),
                        (2, 7) => tile_512::<7, 2>(c, dst_stride, a, lhs_stride, b, k),
                        (2, 6) => tile_512::<6, 2>(c, dst_stride, a, lhs_stride, b, k),
                        (2, 5) => tile_512::<5, 2>(c, dst_stride, a, lhs_stride, b, k),
                        (2, 4) => tile_512::<4, 2>(c, dst_stride, a, lhs_stride, b, k),
                        (2, 3) => tile_512::<3, 2>(c, dst_stride, a, lhs_stride, b, k),
                        (2, 2) => tile_512::<2, 2>(c, dst_stride, a, lhs_stride, b, k),
                        (2, _) => tile_512::<1, 2>(c, dst_stride, a, lhs_stride, b, k),
                        (_, 8) => tile_512::<8, 1>(c, dst_stride, a, lhs_stride, b, k),
                        (_, 7) => tile_512::<7, 1>(c, dst_stride, a, lhs_stride, b, k),
                        (_, 6) => tile_512::<6, 1>(c, dst_stride, a, lhs_stride, b, k),
                        (_, 5) => tile_512::<5, 1>(c, dst_stride, a, lhs_stride, b, k),
                        (_, 4) => tile_512::<4, 1>(c, dst_stride, a, lhs_stride, b, k),
                        (_, 3) => tile_512::<3, 1>(c, dst_stride, a, lhs_stride, b, k),
                        (_, 2) => tile_512::<2, 1>(c, dst_stride, a, lhs_stride, b, k),
                        _ => tile_512::<1, 1>(c, dst_stride, a, lhs_stride, b, k),
                    }
                }
                r += left.min(TILE_512);
            }
            p += wide;
        }
    }

    /// `R` rows × `P` panels of 16 columns: `c[r][..16 P] += Σᵢ a[r][i] · b[i][..16 P]`,
    /// panel `q` read from `b + q · 16 k`, the sums kept in `R · P` registers over the
    /// whole inner dimension.
    ///
    /// # Safety
    /// As [`add_product_avx512`], for these `R` rows and `P` panels from `b`.
    #[inline(always)]
    unsafe fn tile_512<const R: usize, const P: usize>(
        c: *mut f32,
        c_stride: usize,
        a: *const f32,
        a_stride: usize,
        b: *const f32,
        k: usize,
    ) {
        // SAFETY: the caller's guarantees cover every offset read and written.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            for i in 0..k {
                let bv: [__m512; P] =
                    std::array::from_fn(|q| _mm512_loadu_ps(b.add(q * PANEL * k + i * PANEL)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*a.add(r * a_stride + i));
                    for (acc, &bv) in acc.iter_mut().zip(&bv) {
                        *acc = _mm512_fmadd_ps(x, bv, *acc);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (q, acc) in acc.iter().enumerate() {
                    let at = c.add(r * c_stride + q * PANEL);
                    _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), *acc));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::narrow;
    use super::*;

    /// `dst += lhs · B` in f64, with `B` given as `src` the way [`pack`] reads it.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        dst: &mut [f64],
        ds: usize,
        lhs: &[f32],
        ls: usize,
        src: &[f32],
        transposed: bool,
        rows: usize,
        k: usize,
        n: usize,
    ) {
        for r in 0..rows {
            for j in 0..n {
                let mut sum = 0.0;
                for i in 0..k {
                    let b = if transposed {
                        src[j * k + i]
                    } else {
                        src[i * n + j]
                    };
                    sum += f64::from(lhs[r * ls + i]) * f64::from(b);
                }
                dst[r * ds + j] += sum;
            }
        }
    }

    /// Values in `[-1, 1)` from a seed, as f32.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        narrow(&super::super::testing::values(len, seed))
    }

    /// Row counts of every tile and remainder (one to two tiles of six and any
    /// remainder, then larger counts), with padding between rows, both packings,
    /// against an f64 sum and against faer's product.
    #[test]
    fn the_packed_product_matches_f64_and_faer_for_every_row_count() {
        for_every_shape(Kernel::Avx2);
    }

    /// The AVX-512 tile, where the processor has it, and the dispatch chooses it there.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[cfg_attr(
        not(kiln_host_avx512),
        ignore = "no AVX-512F on this machine: the AVX-512 panel tile cannot run here"
    )]
    fn the_avx512_tile_matches_f64_and_faer_for_every_row_count() {
        use std::arch::is_x86_feature_detected as has;
        assert!(
            has!("avx512f") && has!("avx2") && has!("fma"),
            "the AVX-512 tile's test needs AVX-512F, AVX2 and FMA"
        );
        for_every_shape(Kernel::Avx512);
        if has!("avx512vl") {
            assert!(applies::<f32>(16, 128, 512) && !crate::simd::widest_is_avx2());
        }
    }

    /// Which hand kernel [`check`] runs.
    #[derive(Clone, Copy, Debug)]
    enum Kernel {
        Avx2,
        #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
        Avx512,
    }

    /// Row counts of every tile and remainder, with padding between rows, both packings,
    /// an odd panel count among the shapes.
    fn for_every_shape(kernel: Kernel) {
        for &(k, n) in &[(1, 16), (7, 32), (128, 512), (512, 128), (33, 48), (9, 80)] {
            let counts = (1..=17).chain([24, 31, 64]);
            for rows in counts.filter(|&rows| rows <= MAX_ROWS && rows * k <= MAX_LHS) {
                for transposed in [false, true] {
                    check(kernel, rows, k, n, transposed);
                }
            }
        }
    }

    fn check(kernel: Kernel, rows: usize, k: usize, n: usize, transposed: bool) {
        let (ds, ls) = (n + 5, k + 3);
        let lhs = values((rows - 1) * ls + k, (rows * 31 + k) as u64);
        let src = values(k * n, n as u64);
        let start = values((rows - 1) * ds + n, 7);
        let mut packed = vec![0.0f32; k * n];
        pack(&mut packed, &src, k, n, transposed);
        let mut expected: Vec<f64> = start.iter().map(|&v| f64::from(v)).collect();
        naive(&mut expected, ds, &lhs, ls, &src, transposed, rows, k, n);
        let b = if transposed {
            MatRef::from_row_major_slice(&src, n, k).transpose()
        } else {
            MatRef::from_row_major_slice(&src, k, n)
        };
        let mut by_faer = start.clone();
        add_product(&mut by_faer, ds, &lhs, ls, Rhs::Plain(b), rows, k, n);
        let mut by_kernel = start.clone();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match kernel {
                Kernel::Avx2 if has!("avx2") && has!("fma") => {
                    // SAFETY: AVX2 and FMA are there; the lengths are the kernel's.
                    unsafe { x86::add_product(&mut by_kernel, ds, &lhs, ls, &packed, rows, k, n) };
                }
                Kernel::Avx512 => {
                    // SAFETY: the caller checked AVX-512F, AVX2 and FMA; the lengths are
                    // the kernel's.
                    unsafe {
                        x86::add_product_avx512(&mut by_kernel, ds, &lhs, ls, &packed, rows, k, n)
                    };
                }
                Kernel::Avx2 => by_kernel.clone_from(&by_faer),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        by_kernel.clone_from(&by_faer);
        let tolerance = 1e-5 * (k as f64).sqrt() + 1e-6;
        for r in 0..rows {
            for j in 0..n {
                let at = r * ds + j;
                let e = expected[at];
                for (name, got) in [("faer", by_faer[at]), ("kernel", by_kernel[at])] {
                    assert!(
                        (f64::from(got) - e).abs() <= tolerance * (1.0 + e.abs()),
                        "{name} ({kernel:?}) {rows}x{k}x{n} transposed {transposed}: [{r}, {j}] {got} vs {e}"
                    );
                }
            }
            // The padding between rows is left alone.
            if r + 1 < rows {
                assert_eq!(by_kernel[r * ds + n..][..5], start[r * ds + n..][..5]);
            }
        }
    }

    /// Through the dispatch the layers call: packed and plain agree where the kernel
    /// applies on this processor, and `applies` refuses f64, columns off the panels
    /// and too many rows.
    #[test]
    fn add_product_agrees_packed_and_plain_and_applies_refuses_other_shapes() {
        let (rows, k, n) = (16, 128, 512);
        let lhs = values(rows * k, 1);
        let src = values(k * n, 2);
        let mut packed = vec![0.0f32; k * n];
        pack(&mut packed, &src, k, n, false);
        let b = MatRef::from_row_major_slice(&src, k, n);
        let mut plain = vec![0.0f32; rows * n];
        add_product(&mut plain, n, &lhs, k, Rhs::Plain(b), rows, k, n);
        if applies::<f32>(rows, k, n) {
            let mut by_panels = vec![0.0f32; rows * n];
            add_product(&mut by_panels, n, &lhs, k, Rhs::Packed(&packed), rows, k, n);
            for (a, b) in plain.iter().zip(&by_panels) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
            }
        }
        assert!(!applies::<f64>(rows, k, n));
        assert!(!applies::<f32>(rows, k, 520));
        assert!(!applies::<f32>(MAX_ROWS + 1, 1, n));
    }
}
