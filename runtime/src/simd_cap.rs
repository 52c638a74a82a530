//! What the environment variable `KILN_SIMD` allows: read by the library
//! (`simd.rs`), its build script (`build.rs`, for the tests' `cfg`s) and the bench's
//! FMA probe, so that all three read a value the same way.

/// The widest vectors `KILN_SIMD` allows, narrowest first (the library's run-time
/// level, `simd.rs`, is the same three steps).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Cap {
    /// The x86-64 baseline: none of kiln's wide kernels.
    Baseline,
    /// AVX2 and FMA at most, as on a processor without AVX-512.
    Avx2,
    /// Whatever the processor reports.
    Avx512,
}

/// The cap `KILN_SIMD=value` sets: `avx2` or `baseline` (any case, spaces around
/// ignored); AVX-512 (no cap) for an unset or unknown value.
pub(crate) fn cap(value: Option<&str>) -> Cap {
    match value.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("avx2") => Cap::Avx2,
        Some(v) if v.eq_ignore_ascii_case("baseline") => Cap::Baseline,
        _ => Cap::Avx512,
    }
}

/// The cap of this process's `KILN_SIMD`.
pub(crate) fn from_env() -> Cap {
    cap(std::env::var("KILN_SIMD").ok().as_deref())
}
