//! Products with a thin inner dimension: a convolution whose columns have few rows
//! (`K = in_channels · kh · kw`, 9 for a 3x3 kernel on one input channel).
//!
//! As a GEMM, `y = W · col` with `K = 9` does 9 multiply-adds per output value against
//! a load and a store of it, and the weight gradient `g · colᵀ` is a `co × 9` result
//! reduced over the long pixel dimension: faer reached 76 and 64 GFLOP/s on the
//! benchmark CNN's first convolution, against about 100 for its second (one core, a
//! scratch program timing faer alone on those shapes). These kernels
//! keep the 9 column rows of a block of 16 pixels in registers for eight output
//! channels at once (forward), or eighteen accumulators for two output channels
//! (weight gradient), with AVX-512 for f32; anything else (another `K`, a channel
//! count off the blocks, f64, another processor) returns `false` and the caller runs
//! its GEMM.

use std::any::TypeId;

#[cfg(target_arch = "x86_64")]
use super::{as_f32, as_f32_mut};
use crate::Float;

/// The `K` the kernels take: fixed, so that every loop over taps and channels unrolls
/// and the accumulators stay in registers (with a run-time `K` the compiler kept the
/// arrays on the stack, and the kernels ran slower than faer's GEMM).
pub(crate) const K: usize = 9;

/// `y = w · col` for `w`: `co × k`, `col`: `k × p`, `y`: `co × p`, all row-major;
/// `false` (and nothing written) when no kernel applies.
pub(crate) fn forward<T: Float>(y: &mut [T], w: &[T], col: &[T], k: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>()
        && k == K
        && w.len().is_multiple_of(K * x86::CHANNELS)
        && crate::simd::has_avx512()
    {
        let p = col.len() / K;
        assert!(col.len() == K * p && y.len() == w.len() / K * p);
        // SAFETY: `T` is `f32` (same type id) and the processor has AVX-512F.
        unsafe { x86::forward(as_f32_mut(y), as_f32(w), as_f32(col), p) };
        return true;
    }
    let _ = (y, w, col, k);
    false
}

/// `gw (+)= g · colᵀ` for `g`: `co × p`, `col`: `k × p`, `gw`: `co × k`; replaces `gw`
/// unless `add`. `false` (and nothing written) when no kernel applies.
pub(crate) fn weight_grad<T: Float>(gw: &mut [T], g: &[T], col: &[T], k: usize, add: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>()
        && k == K
        && gw.len().is_multiple_of(2 * K)
        && crate::simd::has_avx512()
    {
        let p = col.len() / K;
        assert!(col.len() == K * p && g.len() == gw.len() / K * p);
        // SAFETY: `T` is `f32` (same type id) and the processor has AVX-512F.
        unsafe { x86::weight_grad(as_f32_mut(gw), as_f32(g), as_f32(col), p, add) };
        return true;
    }
    let _ = (gw, g, col, k, add);
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::K;

    /// The lowest `n` of 16 lanes.
    fn mask(n: usize) -> __mmask16 {
        (((1u32 << n) - 1) & 0xffff) as __mmask16
    }

    /// Output channels computed together in the forward kernel: eight independent
    /// multiply-add chains hide the FMA latency.
    pub(super) const CHANNELS: usize = 8;

    #[target_feature(enable = "avx512f")]
    pub(super) fn forward(y: &mut [f32], w: &[f32], col: &[f32], p: usize) {
        let mut first = 0;
        while first < p {
            let m = mask((p - first).min(16));
            let mut taps = [_mm512_setzero_ps(); K];
            for (t, tap) in taps.iter_mut().enumerate() {
                // SAFETY: masked lanes at `t·p + first`, inside row `t` of `col`.
                *tap = unsafe { _mm512_maskz_loadu_ps(m, col.as_ptr().add(t * p + first)) };
            }
            for (block, w) in w.chunks_exact(CHANNELS * K).enumerate() {
                let mut acc = [_mm512_setzero_ps(); CHANNELS];
                for (t, &tap) in taps.iter().enumerate() {
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(w[j * K + t]), tap, *a);
                    }
                }
                for (j, &a) in acc.iter().enumerate() {
                    let row = block * CHANNELS + j;
                    // SAFETY: masked lanes at `row·p + first`, inside row `row` of `y`.
                    unsafe { _mm512_mask_storeu_ps(y.as_mut_ptr().add(row * p + first), m, a) };
                }
            }
            first += 16;
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn weight_grad(gw: &mut [f32], g: &[f32], col: &[f32], p: usize, add: bool) {
        for (pair, gw) in gw.chunks_exact_mut(2 * K).enumerate() {
            let mut acc = [[_mm512_setzero_ps(); K]; 2];
            let mut first = 0;
            while first < p {
                let m = mask((p - first).min(16));
                let mut gv = [_mm512_setzero_ps(); 2];
                for (j, v) in gv.iter_mut().enumerate() {
                    let row = 2 * pair + j;
                    // SAFETY: masked lanes inside row `row` of `g`.
                    *v = unsafe { _mm512_maskz_loadu_ps(m, g.as_ptr().add(row * p + first)) };
                }
                for t in 0..K {
                    // SAFETY: masked lanes inside row `t` of `col`.
                    let tap = unsafe { _mm512_maskz_loadu_ps(m, col.as_ptr().add(t * p + first)) };
                    for (a, &v) in acc.iter_mut().zip(&gv) {
                        a[t] = _mm512_fmadd_ps(v, tap, a[t]);
                    }
                }
                first += 16;
            }
            for (dst, a) in gw.iter_mut().zip(acc.iter().flatten()) {
                let sum = _mm512_reduce_add_ps(*a);
                *dst = if add { *dst + sum } else { sum };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::values;
    use super::*;

    #[test]
    #[cfg_attr(
        not(kiln_host_avx512),
        ignore = "no AVX-512F on this machine: the thin kernels are AVX-512 only and cannot run here"
    )]
    fn thin_products_match_the_definition() {
        // Pixel counts below, at and off the vector width (16), random ones; channel
        // counts of one, two and several blocks (8 forward, 2 for the weight gradient).
        let mut cases = vec![(32, 9, 676), (8, 9, 16), (16, 9, 33), (24, 9, 7), (8, 9, 1)];
        for (i, p) in super::super::testing::sizes(&[16, 32, 64], 8, 300, 5)
            .into_iter()
            .enumerate()
        {
            cases.push((8 * (1 + i % 5), 9, p));
        }
        for (co, k, p) in cases {
            let w: Vec<f32> = values(co * k, 1).iter().map(|&v| v as f32).collect();
            let col: Vec<f32> = values(k * p, 2).iter().map(|&v| v as f32).collect();
            let g: Vec<f32> = values(co * p, 3).iter().map(|&v| v as f32).collect();
            let mut y = vec![f32::NAN; co * p];
            assert!(forward(&mut y, &w, &col, k), "kernel declined {co} {k} {p}");
            for c in 0..co {
                for q in 0..p {
                    let e: f64 = (0..k)
                        .map(|t| f64::from(w[c * k + t]) * f64::from(col[t * p + q]))
                        .sum();
                    let got = f64::from(y[c * p + q]);
                    assert!(
                        (got - e).abs() <= 1e-5 * (1.0 + e.abs()),
                        "y {co} {k} {p}: {got} vs {e}"
                    );
                }
            }
            let before: Vec<f32> = values(co * k, 4).iter().map(|&v| v as f32).collect();
            for add in [false, true] {
                let mut gw = before.clone();
                assert!(weight_grad(&mut gw, &g, &col, k, add));
                for c in 0..co {
                    for t in 0..k {
                        let dot: f64 = (0..p)
                            .map(|q| f64::from(g[c * p + q]) * f64::from(col[t * p + q]))
                            .sum();
                        let e = if add {
                            dot + f64::from(before[c * k + t])
                        } else {
                            dot
                        };
                        let got = f64::from(gw[c * k + t]);
                        assert!(
                            (got - e).abs() <= 1e-4 * (1.0 + e.abs()),
                            "gw {co} {k} {p}: {got} vs {e}"
                        );
                    }
                }
            }
        }
    }
}
