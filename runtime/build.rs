//! Tells the tests whether the machine building them has AVX-512F (`kiln_host_avx512`),
//! and AVX2 with FMA (`kiln_host_avx2`), so that a test of a kernel that needs them is
//! reported as ignored, with the reason, on a machine that cannot run it, instead of
//! passing without running. The library itself decides at run time and does not read
//! this. `KILN_SIMD=avx2` or `baseline` at build time (the cap
//! of `src/simd.rs`) counts as a machine without AVX-512 (and without AVX2), so that a
//! test run under the cap reports those tests ignored.

// Read on x86-64 only.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[path = "src/simd_cap.rs"]
mod simd_cap;

#[cfg(target_arch = "x86_64")]
use simd_cap::Cap;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kiln_host_avx512)");
    println!("cargo::rustc-check-cfg=cfg(kiln_host_avx2)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=KILN_SIMD");
    #[cfg(target_arch = "x86_64")]
    {
        let same = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
        let cap = simd_cap::from_env();
        use std::arch::is_x86_feature_detected as has;
        if same && cap == Cap::Avx512 && has!("avx512f") {
            println!("cargo::rustc-cfg=kiln_host_avx512");
        }
        if same && cap >= Cap::Avx2 && has!("avx2") && has!("fma") {
            println!("cargo::rustc-cfg=kiln_host_avx2");
        }
    }
}
