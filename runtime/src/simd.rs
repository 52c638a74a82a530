//! Run-time choice of vector width for the element-wise loops.
//!
//! A crate that depends on kiln compiles it for the x86-64 baseline unless it sets
//! `-C target-cpu` itself, and there the compiler vectorises a plain loop with SSE2
//! (4 f32 lanes). faer's GEMMs and kiln's hand-written kernels choose their
//! instructions at run time; [`vectorized`] gives the plain loops the same: it runs its
//! body inside a function compiled for AVX-512 or AVX2 + FMA, whichever the processor
//! reports, so the compiler inlines the body there and vectorises it with that width.
//!
//! The body must be a closure marked `#[inline(always)]` that holds the loop itself
//! (or calls only `#[inline]` helpers): a function the body calls without inlining
//! is compiled for the baseline, wherever it is called from, and so is a closure
//! without the attribute (a test, `every_vectorized_body_is_inlined_into_the_wrapper`,
//! reads the crate's source for those). The wrappers enable no
//! fast-math: a loop computes the same values whichever width runs it.
//!
//! The environment variable `KILN_SIMD` caps the width kiln's own loops and kernels
//! use: `avx2` (AVX2 + FMA at most, as on a processor without AVX-512), `baseline`
//! (the x86-64 baseline), `avx512` or unset (whatever the processor reports); any other
//! value is read as unset. It is read once, at the first call that asks. It lets the
//! AVX2 kernels be tested and timed on a processor that has AVX-512; faer's GEMMs
//! choose their own instructions and are not capped.

// Read on x86-64 only.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[path = "simd_cap.rs"]
pub(crate) mod cap;

/// Runs `body` compiled for the widest vector instructions the processor has.
///
/// ```ignore
/// vectorized(
///     #[inline(always)]
///     || {
///         for (y, &x) in output.iter_mut().zip(input) {
///             *y = x.max(0.0);
///         }
///     },
/// );
/// ```
#[inline(always)]
pub(crate) fn vectorized<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match x86::level() {
            x86::Level::Avx512 => {
                // SAFETY: the processor reports every feature the wrapper enables.
                return unsafe { x86::avx512(body) };
            }
            x86::Level::Avx2 => {
                // SAFETY: as above.
                return unsafe { x86::avx2(body) };
            }
            x86::Level::Baseline => {}
        }
    }
    body()
}

/// Marks the upper halves of the AVX registers unused (`vzeroupper`), where the
/// processor has AVX: code that leaves them in use makes every later non-VEX (SSE)
/// instruction on the thread wait, which is most of what a crate compiled for the
/// x86-64 baseline runs outside [`vectorized`] loops.
#[inline(always)]
pub(crate) fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if x86::level() != x86::Level::Baseline {
        // SAFETY: AVX2 (and so AVX) is there, as the level says.
        unsafe { x86::zero_upper() }
    }
}

/// Whether the processor has AVX2 and FMA at least (AVX-512 included).
#[inline(always)]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::level() != x86::Level::Baseline
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the processor has AVX-512F and VL (with AVX2 and FMA).
#[inline(always)]
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::level() == x86::Level::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the widest vectors the processor has are AVX2 + FMA (not AVX-512): which of
/// the recurrent per-step kernels runs (`layers/panels.rs`: its AVX2 tile or its
/// AVX-512 one).
#[inline(always)]
pub(crate) fn widest_is_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::level() == x86::Level::Avx2
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `body` compiled for AVX-512F/VL, AVX2 and FMA: for a kernel written over a
/// vector type, instantiated at `__m512` in `body`.
///
/// # Safety
/// The processor must have AVX-512 ([`has_avx512`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn with_avx512<R>(body: impl FnOnce() -> R) -> R {
    // SAFETY: the caller's guarantee.
    unsafe { x86::avx512(body) }
}

/// Runs `body` compiled for AVX2 and FMA, as [`with_avx512`] for `__m256`.
///
/// # Safety
/// The processor must have AVX2 and FMA ([`has_avx2_fma`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn with_avx2<R>(body: impl FnOnce() -> R) -> R {
    // SAFETY: the caller's guarantee.
    unsafe { x86::avx2(body) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::sync::atomic::{AtomicU8, Ordering};

    /// A level of vector instructions: the same three steps a `KILN_SIMD` cap names,
    /// ordered from narrowest to widest.
    pub(super) use super::cap::Cap as Level;

    /// 0 until the first call has asked the processor; then 1 + the level.
    static LEVEL: AtomicU8 = AtomicU8::new(0);

    /// The widest level the processor supports and `KILN_SIMD` allows, asked once.
    #[inline(always)]
    pub(super) fn level() -> Level {
        match LEVEL.load(Ordering::Relaxed) {
            3 => Level::Avx512,
            2 => Level::Avx2,
            1 => Level::Baseline,
            _ => detect(),
        }
    }

    #[cold]
    fn detect() -> Level {
        use std::arch::is_x86_feature_detected as has;
        let found = if has!("avx512f") && has!("avx512vl") && has!("avx2") && has!("fma") {
            Level::Avx512
        } else if has!("avx2") && has!("fma") {
            Level::Avx2
        } else {
            Level::Baseline
        };
        let level = found.min(super::cap::from_env());
        LEVEL.store(level as u8 + 1, Ordering::Relaxed);
        level
    }

    /// # Safety
    /// The processor must support AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn zero_upper() {
        std::arch::x86_64::_mm256_zeroupper();
    }

    /// # Safety
    /// The processor must support AVX-512F/VL, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    pub(super) unsafe fn avx512<R>(body: impl FnOnce() -> R) -> R {
        body()
    }

    /// # Safety
    /// The processor must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<R>(body: impl FnOnce() -> R) -> R {
        body()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_runs_once_and_its_result_comes_back() {
        let mut calls = 0;
        let value = vectorized(
            #[inline(always)]
            || {
                calls += 1;
                41 + 1
            },
        );
        assert_eq!((value, calls), (42, 1));
    }

    #[test]
    fn a_loop_computes_the_same_values_at_any_width() {
        let input: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.37).sin()).collect();
        let plain: Vec<f32> = input.iter().map(|&x| (x * 1.5 + 0.25).max(0.0)).collect();
        let mut wide = vec![0.0_f32; input.len()];
        vectorized(
            #[inline(always)]
            || {
                for (y, &x) in wide.iter_mut().zip(&input) {
                    *y = (x * 1.5 + 0.25).max(0.0);
                }
            },
        );
        assert_eq!(plain, wide);
    }

    /// The rule in the module's documentation, checked over the crate's source: a
    /// closure handed to [`vectorized`] or the kernels' `with_avx512` and `with_avx2` (or
    /// to conv.rs's `plane_lanes` or the optimisers' `in_halves`, which hand it on) must
    /// be `#[inline(always)]`. Without the attribute the closure is compiled
    /// as a function of its own, for the baseline of the crate that instantiates it,
    /// and the wrapper changes nothing; that is how layer norm and the attention's
    /// softmax ran at SSE2 width in a user's crate. A body passed through by name is
    /// allowed only where listed.
    #[test]
    fn every_vectorized_body_is_inlined_into_the_wrapper() {
        const WRAPPERS: [&str; 5] = [
            "vectorized(",
            "with_avx512(",
            "with_avx2(",
            "plane_lanes(",
            "in_halves(",
        ];
        const PASSED_THROUGH: [&str; 1] = ["body"];
        fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        sources(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let (mut calls, mut wrong) = (0, Vec::new());
        for file in &files {
            let text: String = std::fs::read_to_string(file)
                .unwrap()
                .lines()
                .map(|l| {
                    if l.trim_start().starts_with("//") {
                        ""
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            for wrapper in WRAPPERS {
                for (at, _) in text.match_indices(wrapper) {
                    let before = text[..at].trim_end();
                    let named = before
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_');
                    let quoted = text[..at].ends_with('"');
                    if named || quoted || before.ends_with("fn") {
                        // Another name ending in the wrapper's, a string, or the definition.
                        continue;
                    }
                    let open = at + wrapper.len();
                    let mut depth = 1;
                    let close = text[open..]
                        .char_indices()
                        .find(|&(_, c)| {
                            depth += match c {
                                '(' => 1,
                                ')' => -1,
                                _ => 0,
                            };
                            depth == 0
                        })
                        .map(|(i, _)| open + i)
                        .unwrap_or_else(|| panic!("{}: a call without its `)`", file.display()));
                    let args = &text[open..close];
                    calls += 1;
                    let ok = match args.find('|') {
                        Some(bar) => {
                            let head = args[..bar].trim_end();
                            let head = head.strip_suffix("move").unwrap_or(head);
                            head.trim_end().ends_with("#[inline(always)]")
                        }
                        None => PASSED_THROUGH.contains(&args.trim()),
                    };
                    if !ok {
                        let line = text[..at].matches('\n').count() + 1;
                        wrong.push(format!("{}:{line}", file.display()));
                    }
                }
            }
        }
        assert!(
            calls > 20,
            "only {calls} calls found: is the scan reading the source?"
        );
        assert!(
            wrong.is_empty(),
            "bodies without #[inline(always)]: {wrong:?}"
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn kiln_simd_caps_the_level_and_ignores_what_it_does_not_know() {
        use cap::{cap, Cap};
        assert_eq!(cap(None), Cap::Avx512);
        assert_eq!(cap(Some("avx2")), Cap::Avx2);
        assert_eq!(cap(Some(" AVX2 ")), Cap::Avx2);
        assert_eq!(cap(Some("baseline")), Cap::Baseline);
        assert_eq!(cap(Some("avx512")), Cap::Avx512);
        assert_eq!(cap(Some("sse9")), Cap::Avx512);
        // A cap lowers the level the processor reports, never raises it.
        assert!(Cap::Baseline < Cap::Avx2 && Cap::Avx2 < Cap::Avx512);
        assert!(x86::level() <= cap::from_env());
    }
}
