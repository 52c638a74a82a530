//! The matrix-vector product `y = W x` for a row-major `W`, the kernel of batch-1
//! inference.
//!
//! A GEMM library packs its operands into blocks sized for the caches, which pays off
//! when each weight is used for many rows of input; with one row every weight is used
//! once, so the product is bound by how fast the weight streams in from the cache
//! (on the Zen 4 machine of BENCHMARKS.md, about 110 GB/s from L2 on one core: 3.7 µs
//! for a 784 x 128 f32 weight). Each group of four weight rows is read once, against one
//! shared read of `x`. For f32 on x86-64 the kernels are written with AVX-512 or AVX2
//! intrinsics, chosen at run time by what the processor reports: a generic body keeps
//! its accumulator array in memory and runs at half the speed. Other types and
//! processors use the portable body, `LANES` lane-wise sums that the compiler
//! vectorises without reassociating anything.

use std::any::TypeId;

#[cfg(target_arch = "x86_64")]
use super::{as_f32, as_f32_mut};
use crate::Float;

/// `y[j] = Σᵢ w[j·n + i] · x[i]` with `n = x.len()`, for each of the `y.len()` rows.
///
/// # Panics
/// If `w.len() != y.len() * x.len()`.
pub(crate) fn matvec<T: Float>(y: &mut [T], w: &[T], x: &[T]) {
    assert_eq!(w.len(), y.len() * x.len(), "matvec: weight is not rows x n");
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: `T` is `f32` (same type id), so the slices are `f32` slices.
        let (y, w, x) = unsafe { (as_f32_mut(y), as_f32(w), as_f32(x)) };
        if crate::simd::has_avx512() {
            // SAFETY: the processor supports AVX-512F, checked just above.
            return unsafe { x86::matvec_f32_avx512(y, w, x) };
        }
        if crate::simd::has_avx2_fma() {
            // SAFETY: the processor supports AVX2 and FMA, checked just above.
            return unsafe { x86::matvec_f32_avx2(y, w, x) };
        }
    }
    matvec_body::<T, 16>(y, w, x);
}

/// Hand-written f32 kernels: the compiler keeps a generic accumulator array in memory,
/// which halves the speed, where these keep eight accumulators in registers and fuse
/// each multiply-add. Four weight rows share each load of `x`; a row's columns past the
/// last full vector, and the rows past the last group of four, are summed in scalar.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    macro_rules! kernel {
        ($name:ident, $feature:literal, $width:literal, $zero:ident, $load:ident, $fma:ident, $add:ident, $sum:path) => {
            #[target_feature(enable = $feature)]
            pub(super) fn $name(y: &mut [f32], w: &[f32], x: &[f32]) {
                let n = x.len();
                let pairs = n / (2 * $width) * (2 * $width);
                let body = n / $width * $width;
                let mut y_groups = y.chunks_exact_mut(4);
                let mut w_groups = w.chunks_exact(4 * n);
                for (yg, wg) in (&mut y_groups).zip(&mut w_groups) {
                    let mut acc = [$zero(); 8];
                    for i in (0..pairs).step_by(2 * $width) {
                        // SAFETY: `i + 2·width <= pairs <= n`, so every load reads inside
                        // `x` (n values) and inside row `r < 4` of `wg` (4·n values).
                        unsafe {
                            let xp = x.as_ptr().add(i);
                            let (x0, x1) = ($load(xp), $load(xp.add($width)));
                            for r in 0..4 {
                                let wp = wg.as_ptr().add(r * n + i);
                                acc[2 * r] = $fma($load(wp), x0, acc[2 * r]);
                                acc[2 * r + 1] = $fma($load(wp.add($width)), x1, acc[2 * r + 1]);
                            }
                        }
                    }
                    if body > pairs {
                        // SAFETY: `pairs + width == body <= n`: one more vector per row.
                        unsafe {
                            let x0 = $load(x.as_ptr().add(pairs));
                            for r in 0..4 {
                                let wp = wg.as_ptr().add(r * n + pairs);
                                acc[2 * r] = $fma($load(wp), x0, acc[2 * r]);
                            }
                        }
                    }
                    for (r, out) in yg.iter_mut().enumerate() {
                        let row = &wg[r * n..(r + 1) * n];
                        let tail: f32 =
                            row[body..].iter().zip(&x[body..]).map(|(a, b)| a * b).sum();
                        *out = $sum($add(acc[2 * r], acc[2 * r + 1])) + tail;
                    }
                }
                for (out, row) in y_groups
                    .into_remainder()
                    .iter_mut()
                    .zip(w_groups.remainder().chunks_exact(n))
                {
                    *out = super::dots::<f32, 16, 1>(row, x)[0];
                }
            }
        };
    }

    kernel!(
        matvec_f32_avx512,
        "avx512f,avx2,fma",
        16,
        zero512,
        load512,
        fma512,
        add512,
        sum512
    );
    kernel!(
        matvec_f32_avx2,
        "avx2,fma",
        8,
        zero256,
        load256,
        fma256,
        add256,
        sum256
    );

    #[inline(always)]
    fn zero512() -> __m512 {
        // SAFETY: only called from functions compiled with AVX-512F.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load512(p: *const f32) -> __m512 {
        // SAFETY: the caller reads 16 values inside a slice, with AVX-512F enabled.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    fn fma512(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: only called from functions compiled with AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn add512(a: __m512, b: __m512) -> __m512 {
        // SAFETY: only called from functions compiled with AVX-512F.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sum512(a: __m512) -> f32 {
        // SAFETY: only called from functions compiled with AVX-512F.
        unsafe { _mm512_reduce_add_ps(a) }
    }
    #[inline(always)]
    fn zero256() -> __m256 {
        // SAFETY: only called from functions compiled with AVX2.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load256(p: *const f32) -> __m256 {
        // SAFETY: the caller reads 8 values inside a slice, with AVX2 enabled.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    fn fma256(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: only called from functions compiled with AVX2 and FMA.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn add256(a: __m256, b: __m256) -> __m256 {
        // SAFETY: only called from functions compiled with AVX2.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sum256(a: __m256) -> f32 {
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 values; only called with AVX2 enabled.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
        super::halve(&lanes)
    }
}

/// Weight rows read together against one read of `x`.
const GROUP: usize = 4;

#[inline(always)]
fn matvec_body<T: Float, const LANES: usize>(y: &mut [T], w: &[T], x: &[T]) {
    let n = x.len();
    let mut y_blocks = y.chunks_exact_mut(GROUP);
    let mut w_blocks = w.chunks_exact(GROUP * n);
    for (yg, wg) in (&mut y_blocks).zip(&mut w_blocks) {
        yg.copy_from_slice(&dots::<T, LANES, GROUP>(wg, x));
    }
    for (y1, w1) in y_blocks
        .into_remainder()
        .iter_mut()
        .zip(w_blocks.remainder().chunks_exact(n))
    {
        *y1 = dots::<T, LANES, 1>(w1, x)[0];
    }
}

/// The dot products of the `R` rows in `w` (each `x.len()` long) with `x`.
#[inline(always)]
fn dots<T: Float, const LANES: usize, const R: usize>(w: &[T], x: &[T]) -> [T; R] {
    let n = x.len();
    let body = n / LANES * LANES;
    let mut acc = [[T::ZERO; LANES]; R];
    for start in (0..body).step_by(LANES) {
        let xs: &[T; LANES] = x[start..start + LANES].try_into().expect("LANES long");
        for (r, acc) in acc.iter_mut().enumerate() {
            let row = r * n + start;
            let ws: &[T; LANES] = w[row..row + LANES].try_into().expect("LANES long");
            for l in 0..LANES {
                acc[l] += ws[l] * xs[l];
            }
        }
    }
    let mut out = [T::ZERO; R];
    for (r, (out, acc)) in out.iter_mut().zip(&acc).enumerate() {
        let mut tail = T::ZERO;
        for i in body..n {
            tail += w[r * n + i] * x[i];
        }
        *out = halve(acc) + tail;
    }
    out
}

/// Sums the lanes by halving: `LANES` is a power of two.
#[inline(always)]
fn halve<T: Float, const LANES: usize>(acc: &[T; LANES]) -> T {
    let mut lanes = *acc;
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
    }
    lanes[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(w: &[f64], x: &[f64]) -> Vec<f64> {
        w.chunks_exact(x.len())
            .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect()
    }

    #[test]
    fn matches_the_naive_product_for_every_shape_class() {
        // Rows not a multiple of 4 and lengths below, at and off the lane widths.
        for (rows, n) in [
            (1, 1),
            (3, 5),
            (4, 16),
            (5, 31),
            (7, 32),
            (9, 33),
            (128, 784),
            (10, 128),
        ] {
            let w: Vec<f64> = (0..rows * n)
                .map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0)
                .collect();
            let x: Vec<f64> = (0..n)
                .map(|i| ((i * 13 % 29) as f64 - 14.0) / 3.0)
                .collect();
            let mut y = vec![f64::NAN; rows];
            matvec(&mut y, &w, &x);
            for (got, want) in y.iter().zip(naive(&w, &x)) {
                assert!(
                    (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
                    "{rows}x{n}: {got} vs {want}"
                );
            }
            let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let mut y32 = vec![f32::NAN; rows];
            matvec(&mut y32, &w32, &x32);
            for (got, want) in y32.iter().zip(naive(&w, &x)) {
                let scale = 1.0 + w.len() as f64;
                assert!(
                    (f64::from(*got) - want).abs() <= 1e-5 * scale,
                    "f32 {rows}x{n}: {got} vs {want}"
                );
            }
        }
    }

    /// `matvec` in f32 (the vector kernel this processor takes) against the generic
    /// f64 path, within f32's rounding of the products' magnitudes.
    fn f32_matches_f64(rows: usize, n: usize, seed: u64, kernel: fn(&mut [f32], &[f32], &[f32])) {
        use super::super::testing::values;
        let w = values(rows * n, seed);
        let x = values(n, seed + 1);
        let mut wide = vec![0.0f64; rows];
        matvec(&mut wide, &w, &x);
        let (w32, x32): (Vec<f32>, Vec<f32>) = (
            w.iter().map(|&v| v as f32).collect(),
            x.iter().map(|&v| v as f32).collect(),
        );
        let mut narrow = vec![f32::NAN; rows];
        kernel(&mut narrow, &w32, &x32);
        for r in 0..rows {
            let magnitude: f64 = (0..n).map(|j| (w[r * n + j] * x[j]).abs()).sum();
            let err = (f64::from(narrow[r]) - wide[r]).abs();
            assert!(
                err <= 1e-6 * (1.0 + magnitude),
                "{rows} x {n}, row {r}: {} vs {}",
                narrow[r],
                wide[r]
            );
        }
    }

    #[test]
    fn the_f32_kernels_match_the_generic_f64_path_on_random_shapes() {
        use super::super::testing::sizes;
        // Columns straddling one, two and four vectors of 16 (and the 64-wide unrolled
        // step), rows straddling the kernel's groups of four; random ones too.
        let cols = sizes(&[16, 32, 64, 128], 12, 1000, 3);
        let rows = sizes(&[4, 8, 16], 6, 40, 4);
        for (i, &n) in cols.iter().enumerate() {
            for (j, &r) in rows.iter().enumerate() {
                f32_matches_f64(r, n, (i * 100 + j) as u64, matvec::<f32>);
            }
        }
    }

    #[test]
    #[cfg_attr(
        not(kiln_host_avx512),
        ignore = "no AVX-512F on this machine: the AVX-512 matrix-vector kernel cannot run here"
    )]
    fn the_avx512_kernel_matches_the_generic_f64_path_on_random_shapes() {
        use super::super::testing::sizes;
        #[cfg(target_arch = "x86_64")]
        {
            assert!(std::arch::is_x86_feature_detected!("avx512f"));
            let kernel: fn(&mut [f32], &[f32], &[f32]) =
                // SAFETY: AVX-512F is present, asserted above.
                |y, w, x| unsafe { x86::matvec_f32_avx512(y, w, x) };
            for (i, n) in sizes(&[16, 32, 64, 128], 12, 1000, 5)
                .into_iter()
                .enumerate()
            {
                for (j, r) in sizes(&[4, 8, 16], 4, 40, 6).into_iter().enumerate() {
                    f32_matches_f64(r, n, (i * 100 + j) as u64, kernel);
                }
            }
        }
    }

    #[test]
    fn every_kernel_matches_the_portable_one() {
        // Columns: under one vector, paired vectors plus one more plus a tail, 784.
        for (rows, n) in [(13, 5), (13, 50), (13, 100), (10, 784)] {
            kernels_match(rows, n);
        }
    }

    fn kernels_match(rows: usize, n: usize) {
        let w: Vec<f32> = (0..rows * n)
            .map(|i| (i % 17) as f32 * 0.37 - 3.0)
            .collect();
        let x: Vec<f32> = (0..n).map(|i| (i % 11) as f32 * 0.21 - 1.0).collect();
        let mut portable = vec![0.0; rows];
        matvec_body::<f32, 16>(&mut portable, &w, &x);
        let close = |got: &[f32]| {
            for (a, b) in got.iter().zip(&portable) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
            }
        };
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                let mut y = vec![f32::NAN; rows];
                // SAFETY: AVX-512F is present.
                unsafe { x86::matvec_f32_avx512(&mut y, &w, &x) };
                close(&y);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                let mut y = vec![f32::NAN; rows];
                // SAFETY: AVX2 and FMA are present.
                unsafe { x86::matvec_f32_avx2(&mut y, &w, &x) };
                close(&y);
            }
        }
        let mut dispatched = vec![f32::NAN; rows];
        matvec(&mut dispatched, &w, &x);
        close(&dispatched);
    }
}
