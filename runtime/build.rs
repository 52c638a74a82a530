//! Tells the tests whether the machine building them has AVX-512F, so that a test of an
//! AVX-512 kernel is reported as ignored, with the reason, on a machine that cannot
//! run it, instead of passing without running. The library itself decides at run
//! time and does not read this. `KILN_SIMD=avx2` or `baseline` at build time (the cap
//! of `src/simd.rs`) counts as a machine without AVX-512, so that a test run under the
//! cap reports those tests ignored.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kiln_host_avx512)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=KILN_SIMD");
    #[cfg(target_arch = "x86_64")]
    {
        let same = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
        let capped = std::env::var("KILN_SIMD").is_ok_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("avx2") || v.eq_ignore_ascii_case("baseline")
        });
        if same && !capped && std::arch::is_x86_feature_detected!("avx512f") {
            println!("cargo::rustc-cfg=kiln_host_avx512");
        }
    }
}
