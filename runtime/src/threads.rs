//! The threads kiln runs on besides rayon's pool.
//!
//! Large layers split their work across rayon's threads. A batch-1 dense layer is too
//! short for that (handing work to a rayon worker costs several microseconds, as long
//! as the work), so its matrix-vector product is split with one **helper thread** that
//! spins on an atomic for a while after each job, waiting for the next, and parks
//! after that. Its half of a call is taken back if it is late, so a call never waits
//! on it.
//!
//! When rayon's pool has exactly two threads, the same helper also takes the second
//! half of every two-way split of a layer or optimiser, in place of rayon's other
//! worker: on a two-vCPU guest rayon's idle worker picked a queued half up about 20 µs
//! late, a fifth of the 784-128-10 MLP's training step (docs/design.md, "Every
//! two-way split"). At most two threads work at once. Switching the helper off
//! returns those splits to rayon; with three threads or more rayon splits them as
//! it always has.
//!
//! What each choice gives, from `cargo bench --bench helper` (the 784-128-10 MLP's
//! `infer` at batch 1; median latency, and the process's CPU time per request; 2 vCPUs
//! of a Zen 3 EPYC, one run, 40 rounds; run it on your machine):
//!
//! | setting | back to back | CPU a request | one request a millisecond | CPU a request |
//! | --- | ---: | ---: | ---: | ---: |
//! | `Off` | 7.05 µs | 7.4 µs | 24.7 µs | 46 µs |
//! | `Spin(0)` | 11.48 µs | 16.8 µs | 37.2 µs | 63 µs |
//! | `Spin(20 µs)` | 3.56 µs | 7.1 µs | 47.9 µs | 80 µs |
//! | `Spin(200 µs)`, the default | 3.52 µs | 6.5 µs | 28.7 µs | 253 µs |
//! | `Spin(2 ms)` | 3.50 µs | 6.5 µs | 26.3 µs | 1,006 µs |
//!
//! The same bench built as a user's crate builds it (a binary crate outside the
//! repository, `kiln = { path = … }`, default settings, `main` = benches/helper.rs; one
//! run): back to back `Off` 6.68 µs, `Spin(0)` 11.12, `Spin(20 µs)` 3.44, the default
//! 3.40, `Spin(2 ms)` 3.44; one request a millisecond 21.3, 31.9, 30.6, 26.8 and
//! 21.4 µs, with 41, 54, 72, 250 and 1,004 µs of CPU a request.
//!
//! So: for a stream of batch-1 calls the helper halves the latency at no cost in CPU
//! time; for requests that arrive far apart it does not help (a request after a
//! millisecond's sleep finds cold caches, with or without it: the figures in that
//! column are within each other's spread) and its spin after each one costs the
//! machine as much CPU time as the spin lasts: switch it off for sparse traffic.
//! `Spin(0)` (park after every job, so every call wakes the helper) is slower than
//! none.
//!
//! While it spins it keeps a core busy, for at most the spin time after the last
//! batch-1 call; then it parks and costs nothing. It starts on the first
//! batch-1 call, only if rayon's pool has at least two threads (`RAYON_NUM_THREADS=1`
//! means no helper) and the process may run on at least two CPUs; it runs on the CPUs
//! the process may use (on Linux, the main thread's affinity), not on those of
//! whichever thread called first, so pinning one thread does not pin the helper to it.
//!
//! [`set_small_batch_helper`] chooses, at any time:
//!
//! ```
//! use kiln_runtime::threads::{set_small_batch_helper, small_batch_helper, SmallBatchHelper};
//! use std::time::Duration;
//!
//! set_small_batch_helper(SmallBatchHelper::Off); // batch-1 calls use their own thread only
//! assert_eq!(small_batch_helper(), SmallBatchHelper::Off);
//! set_small_batch_helper(SmallBatchHelper::Spin(Duration::from_micros(50)));
//! set_small_batch_helper(SmallBatchHelper::default()); // spin 200 µs
//! ```
//!
//! The environment variable `KILN_SMALL_BATCH_HELPER` sets the starting choice: `off`,
//! or a spin time in microseconds (`0` parks after every job: each call then wakes the
//! helper, which is slower than no helper on most machines).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How batch-1 kernels use a second core; see the [module docs](self).
///
/// ```
/// use kiln_runtime::threads::{set_small_batch_helper, small_batch_helper, SmallBatchHelper};
/// use std::time::Duration;
/// // A server with sparse requests: no spinning core between them.
/// set_small_batch_helper(SmallBatchHelper::Off);
/// assert_eq!(small_batch_helper(), SmallBatchHelper::Off);
/// // A stream of requests: the helper stays awake 50 µs after each.
/// set_small_batch_helper(SmallBatchHelper::Spin(Duration::from_micros(50)));
/// assert_eq!(small_batch_helper(), SmallBatchHelper::Spin(Duration::from_micros(50)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmallBatchHelper {
    /// No helper: batch-1 kernels run on the calling thread alone, two-way splits go to
    /// rayon's workers, and a helper already started parks for good after its spin.
    Off,
    /// A helper that spins this long after each job before it parks (at most
    /// [`MAX_SPIN`]; longer is cut to it).
    Spin(Duration),
}

/// The longest spin [`SmallBatchHelper::Spin`] keeps.
///
/// ```
/// use kiln_runtime::threads::{set_small_batch_helper, small_batch_helper, SmallBatchHelper, MAX_SPIN};
/// use std::time::Duration;
/// set_small_batch_helper(SmallBatchHelper::Spin(Duration::from_secs(60)));
/// assert_eq!(small_batch_helper(), SmallBatchHelper::Spin(MAX_SPIN));
/// ```
pub const MAX_SPIN: Duration = Duration::from_secs(1);

impl Default for SmallBatchHelper {
    /// `Spin(200 µs)`: long enough that a loop of batch-1 calls finds the helper awake,
    /// short enough that an idle program stops spending a core at once.
    fn default() -> Self {
        SmallBatchHelper::Spin(Duration::from_micros(200))
    }
}

/// 0: not chosen yet (the environment decides); 1: off; `n + 2`: spin `n` ns.
static SETTING: AtomicU64 = AtomicU64::new(0);

fn encode(mode: SmallBatchHelper) -> u64 {
    match mode {
        SmallBatchHelper::Off => 1,
        SmallBatchHelper::Spin(spin) => spin.min(MAX_SPIN).as_nanos() as u64 + 2,
    }
}

/// Chooses how batch-1 kernels (and, on a pool of two threads, every two-way split)
/// use a second core, from the next call on.
///
/// ```
/// use kiln_runtime::threads::{set_small_batch_helper, small_batch_helper, SmallBatchHelper};
/// use std::time::Duration;
/// set_small_batch_helper(SmallBatchHelper::default());
/// assert_eq!(small_batch_helper(), SmallBatchHelper::Spin(Duration::from_micros(200)));
/// ```
pub fn set_small_batch_helper(mode: SmallBatchHelper) {
    SETTING.store(encode(mode), Ordering::Relaxed);
}

/// The current choice: the last [`set_small_batch_helper`], else what
/// `KILN_SMALL_BATCH_HELPER` says, else the default.
///
/// ```
/// use kiln_runtime::threads::{small_batch_helper, SmallBatchHelper};
/// // With no choice made and KILN_SMALL_BATCH_HELPER unset, the default.
/// if std::env::var_os("KILN_SMALL_BATCH_HELPER").is_none() {
///     assert_eq!(small_batch_helper(), SmallBatchHelper::default());
/// }
/// ```
pub fn small_batch_helper() -> SmallBatchHelper {
    let mut setting = SETTING.load(Ordering::Relaxed);
    if setting == 0 {
        let chosen = from_env(std::env::var("KILN_SMALL_BATCH_HELPER").ok().as_deref());
        // A choice made meanwhile wins over the environment.
        setting =
            match SETTING.compare_exchange(0, encode(chosen), Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => encode(chosen),
                Err(current) => current,
            };
    }
    match setting {
        1 => SmallBatchHelper::Off,
        nanos => SmallBatchHelper::Spin(Duration::from_nanos(nanos - 2)),
    }
}

/// The choice `KILN_SMALL_BATCH_HELPER=value` makes; the default for an unset or
/// unreadable value.
fn from_env(value: Option<&str>) -> SmallBatchHelper {
    match value.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("off") => SmallBatchHelper::Off,
        Some(v) => match v.parse::<u64>() {
            Ok(micros) => SmallBatchHelper::Spin(Duration::from_micros(micros)),
            Err(_) => SmallBatchHelper::default(),
        },
        None => SmallBatchHelper::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_reads_off_or_microseconds() {
        assert_eq!(from_env(Some("off")), SmallBatchHelper::Off);
        assert_eq!(from_env(Some(" OFF ")), SmallBatchHelper::Off);
        assert_eq!(
            from_env(Some("50")),
            SmallBatchHelper::Spin(Duration::from_micros(50))
        );
        assert_eq!(from_env(Some("0")), SmallBatchHelper::Spin(Duration::ZERO));
        assert_eq!(from_env(Some("fast")), SmallBatchHelper::default());
        assert_eq!(from_env(None), SmallBatchHelper::default());
    }

    #[test]
    fn spins_are_kept_to_the_bound() {
        assert_eq!(
            encode(SmallBatchHelper::Spin(Duration::from_secs(3600))),
            encode(SmallBatchHelper::Spin(MAX_SPIN))
        );
    }
}
