//! Tells the tests whether the machine building them has AVX-512F, so that a test of an
//! AVX-512 kernel is reported as ignored, with the reason, on a machine that cannot
//! run it, instead of passing without running. The library itself decides at run
//! time and does not read this.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kiln_host_avx512)");
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(target_arch = "x86_64")]
    {
        let same = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
        if same && std::arch::is_x86_feature_detected!("avx512f") {
            println!("cargo::rustc-cfg=kiln_host_avx512");
        }
    }
}
