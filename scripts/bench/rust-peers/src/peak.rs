//! The processor's fused multiply-add peak in f32, measured rather than computed from a
//! data sheet: each of `threads` threads runs independent chains of FMAs on the widest
//! vectors the processor reports at run time (AVX-512F, else AVX2 with FMA; at most
//! what `KILN_SIMD` allows, the cap of kiln's own kernels), twelve chains, enough to
//! cover the FMA latency on every port of the x86 cores we know. The best of seven
//! timings counts, so a slow phase of a shared host lowers no figure; turbo and the
//! frequency the wide vectors run at are what they are during the run, as they are
//! during a training step.
//!
//! Each thread reads the clock itself, just before and just after its chains, and a
//! timing spans the earliest start to the latest end. The clock must not be read by a
//! thread that is not running chains: with two cores, a third thread (the one that
//! spawned the workers) can be woken only after a worker has started, and its late
//! start put the two-thread figure up to 22 % above twice the one-thread figure
//! (Zen 5, two vCPUs, four pairs of runs each way: 597–654 GFLOP/s on two threads
//! where one read 267–307, against 527–543 where one reads 264–281 now).

use std::sync::Barrier;
use std::time::Instant;

/// Chains per thread: independent accumulators, so no FMA waits for another.
const CHAINS: usize = 12;

/// Iterations of each thread's loop: each runs one FMA on every chain.
const ITERS: u64 = 20_000_000;

/// GFLOP/s of `threads` threads each running FMA chains, and the instruction set used;
/// `None` where no wide FMA is available (or off x86-64).
pub fn measure(threads: usize) -> Option<(f64, &'static str)> {
    let (kernel, lanes, name) = kernel()?;
    let barrier = Barrier::new(threads);
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        let start = Instant::now();
                        std::hint::black_box(kernel(std::hint::black_box(ITERS)));
                        (start, Instant::now())
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("an FMA loop cannot panic"))
                .collect()
        });
        let start = spans.iter().map(|s| s.0).min()?;
        let end = spans.iter().map(|s| s.1).max()?;
        best = best.min((end - start).as_secs_f64());
    }
    let flops = 2.0 * (CHAINS * lanes) as f64 * ITERS as f64 * threads as f64;
    Some((flops / best / 1e9, name))
}

type Kernel = fn(u64) -> f32;

#[cfg(target_arch = "x86_64")]
#[path = "../../../../runtime/src/simd_cap.rs"]
mod simd_cap;

#[cfg(target_arch = "x86_64")]
use simd_cap::Cap;

#[cfg(target_arch = "x86_64")]
fn kernel() -> Option<(Kernel, usize, &'static str)> {
    // `KILN_SIMD` caps kiln's kernels (runtime/src/simd.rs); the probe follows, so
    // that a capped run is compared with the peak at the same width.
    let cap = simd_cap::from_env();
    if cap == Cap::Baseline {
        None
    } else if cap == Cap::Avx512 && is_x86_feature_detected!("avx512f") {
        // SAFETY (of the calls inside): the feature was detected just now.
        Some((|n| unsafe { x86::fma512(n) }, 16, "AVX-512F"))
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Some((|n| unsafe { x86::fma256(n) }, 8, "AVX2+FMA"))
    } else {
        None
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn kernel() -> Option<(Kernel, usize, &'static str)> {
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::CHAINS;
    use std::arch::x86_64::*;

    /// # Safety
    /// The processor must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512(iters: u64) -> f32 {
        let a = _mm512_set1_ps(0.999_999);
        let b = _mm512_set1_ps(1e-7);
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for r in acc.iter_mut() {
                *r = _mm512_fmadd_ps(*r, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_ps(), |s, &r| _mm512_add_ps(s, r));
        _mm512_reduce_add_ps(sum)
    }

    /// # Safety
    /// The processor must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(iters: u64) -> f32 {
        let a = _mm256_set1_ps(0.999_999);
        let b = _mm256_set1_ps(1e-7);
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for r in acc.iter_mut() {
                *r = _mm256_fmadd_ps(*r, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, &r| _mm256_add_ps(s, r));
        let mut lanes = [0.0_f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
        lanes.iter().sum()
    }
}
