//! A second thread for kernels too short for rayon: `pair(a, b)` runs `a` on the
//! calling thread and offers `b` to a helper thread that spins briefly between jobs.
//!
//! Batch-1 inference of the benchmark MLP streams a 400 KB weight, which one core
//! reads from its L2 in about 3.5 µs (`cargo bench --bench training -- stream/`);
//! two cores reading half each take half as long,
//! but only if handing over the second half costs well under a microsecond. rayon's
//! join from a thread outside its pool queues the job, wakes a worker and sleeps on a
//! latch (several µs); even on the pool, an idle worker polls with `sched_yield` and
//! picks a job up about as late as the half would take. The helper here waits for
//! work by spinning on one atomic for a while after its last job ([`spin`]; see
//! [`crate::threads`] for the choice), so a loop of
//! batch-1 calls finds it awake, and parks after that, so an idle program spends no
//! CPU on it.
//!
//! The offer can always be taken back: if the helper has not claimed `b` by the time
//! `a` is done, the caller runs `b` itself. A caller never waits on a sleeping helper,
//! so the worst case is the single-threaded time plus two atomic operations.
//!
//! Safety: `b` lives on the caller's stack. The helper only touches it between a
//! successful claim and its `DONE` store, and the caller does not return (or unwind)
//! before it has either taken the offer back or seen `DONE`.
//!
//! Panics: a panic in `b` on the helper is caught there, handed back with `DONE` and
//! resumed on the caller, so `pair` panics as if both halves had run on the calling
//! thread and the helper lives on. A panic in `a` (or in `b` run on the caller) settles
//! the offer exactly once on the way out: the slot is freed for the next caller, and
//! never taken from under another caller's offer.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::threads::{small_batch_helper, SmallBatchHelper};

/// How long the helper spins for the next job before it parks: the choice of
/// [`crate::threads::set_small_batch_helper`], none when it is off.
fn spin() -> Duration {
    match small_batch_helper() {
        SmallBatchHelper::Off => Duration::ZERO,
        SmallBatchHelper::Spin(spin) => spin,
    }
}

/// The slot is free.
const IDLE: u8 = 0;
/// A caller owns the slot and is writing its job.
const WRITING: u8 = 1;
/// A job is offered.
const POSTED: u8 = 2;
/// The helper is running the job.
const CLAIMED: u8 = 3;
/// The helper has finished the job; the caller frees the slot.
const DONE: u8 = 4;

/// The job: a closure on the caller's stack, its lifetime erased (see the module docs).
type Job = *mut (dyn FnMut() + Send + 'static);

/// A panic's payload, carried from the helper to the caller.
type Payload = Box<dyn Any + Send + 'static>;

struct Helper {
    state: AtomicU8,
    job: UnsafeCell<Option<Job>>,
    /// The payload of a panic in the last job, written by the helper before `DONE`
    /// and taken by the caller after it.
    panic: UnsafeCell<Option<Payload>>,
    parked: AtomicBool,
    thread: Thread,
}

// SAFETY: `job` is written only by the caller that moved `state` from IDLE to WRITING
// and read only by the helper after it moved `state` from POSTED to CLAIMED; `panic`
// is written only by the helper between CLAIMED and DONE and taken only by the caller
// after it saw DONE; the Release/Acquire pairs on `state` order those accesses.
unsafe impl Sync for Helper {}
// SAFETY: as above; the raw pointer is only dereferenced under that protocol.
unsafe impl Send for Helper {}

/// The helper, started on first use; `None` if rayon is limited to one thread (the
/// user's budget of threads), the process may run on one CPU only, or the thread could
/// not be started.
fn helper() -> Option<&'static Helper> {
    static HELPER: OnceLock<Option<&'static Helper>> = OnceLock::new();
    *HELPER.get_or_init(|| {
        if rayon::current_num_threads() < 2 {
            return None;
        }
        let cpus = affinity::process_cpus();
        if cpus.as_ref().is_some_and(|set| set.count() < 2) {
            return None;
        }
        let (send, receive) = std::sync::mpsc::channel::<&'static Helper>();
        let handle = std::thread::Builder::new()
            .name("kiln-pair".into())
            .spawn(move || {
                // A new thread inherits its creator's CPUs: run on the process's.
                if let Some(cpus) = cpus {
                    cpus.apply_to_this_thread();
                }
                if let Ok(helper) = receive.recv() {
                    serve(helper);
                }
            })
            .ok()?;
        let helper: &'static Helper = Box::leak(Box::new(Helper {
            state: AtomicU8::new(IDLE),
            job: UnsafeCell::new(None),
            panic: UnsafeCell::new(None),
            parked: AtomicBool::new(false),
            thread: handle.thread().clone(),
        }));
        send.send(helper).ok()?;
        Some(helper)
    })
}

/// The helper's loop: claim and run offered jobs; spin for [`spin`] after each, then
/// park until a caller unparks it.
fn serve(helper: &'static Helper) {
    let mut last = Instant::now();
    loop {
        if helper.state.load(Ordering::Relaxed) == POSTED
            && helper
                .state
                .compare_exchange(POSTED, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            // SAFETY: the claim gives this thread the job (and the panic slot) until it
            // stores DONE, and the caller keeps the closure alive until it sees DONE.
            unsafe {
                if let Some(job) = *helper.job.get() {
                    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (*job)())) {
                        *helper.panic.get() = Some(payload);
                    }
                }
            }
            helper.state.store(DONE, Ordering::Release);
            last = Instant::now();
            continue;
        }
        if last.elapsed() < spin() {
            std::hint::spin_loop();
            continue;
        }
        helper.parked.store(true, Ordering::SeqCst);
        if helper.state.load(Ordering::SeqCst) != POSTED {
            std::thread::park();
        }
        helper.parked.store(false, Ordering::SeqCst);
        last = Instant::now();
    }
}

/// Who ran the second half of a [`pair`] call, and who finished first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The calling thread ran both halves: there is no helper, another caller had it,
    /// or it had not claimed the offer by the time the first half was done.
    Alone,
    /// The helper ran `b` and was done before the caller finished `a`.
    HelperFirst,
    /// The helper ran `b` and the caller waited for it after finishing `a`.
    CallerFirst,
}

/// Runs `a` here and `b` on the helper if it takes it in time, else `b` here too.
pub(crate) fn pair(a: impl FnOnce(), b: &mut (dyn FnMut() + Send)) -> Outcome {
    let helper = match small_batch_helper() {
        SmallBatchHelper::Off => None,
        SmallBatchHelper::Spin(_) => helper(),
    };
    let Some(helper) = helper else {
        a();
        b();
        return Outcome::Alone;
    };
    if helper
        .state
        .compare_exchange(IDLE, WRITING, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        // Another caller has the helper.
        a();
        b();
        return Outcome::Alone;
    }
    // SAFETY: only the lifetime is erased; the guard below keeps `b` alive for as long
    // as the helper may use it.
    let job: Job = unsafe { std::mem::transmute::<*mut (dyn FnMut() + Send + '_), Job>(b) };
    // SAFETY: this thread owns the slot (WRITING).
    unsafe { *helper.job.get() = Some(job) };
    helper.state.store(POSTED, Ordering::SeqCst);
    if helper.parked.load(Ordering::SeqCst) {
        helper.thread.unpark();
    }
    /// Takes the offer back or waits for the helper, exactly once: through
    /// [`Finish::finish`] after `a`, or on drop if `a` panics.
    struct Finish<'a> {
        helper: &'a Helper,
        b: Job,
        _b: std::marker::PhantomData<&'a mut ()>,
    }
    /// How an offer ended.
    enum Settled {
        /// Taken back: `b` has not run.
        TakenBack,
        /// The helper ran `b` (and maybe panicked in it).
        Ran(Outcome, Option<Payload>),
    }
    impl Finish<'_> {
        /// Frees the slot, either by taking the offer back or after the helper's DONE.
        fn settle(&self) -> Settled {
            let state = &self.helper.state;
            if state
                .compare_exchange(POSTED, WRITING, Ordering::Acquire, Ordering::Acquire)
                .is_ok()
            {
                // SAFETY: the slot is ours again; clear the pointer before freeing it.
                unsafe { *self.helper.job.get() = None };
                state.store(IDLE, Ordering::Release);
                return Settled::TakenBack;
            }
            let mut outcome = Outcome::HelperFirst;
            let mut waiting_since = None;
            while state.load(Ordering::Acquire) != DONE {
                outcome = Outcome::CallerFirst;
                wait_for_helper(&mut waiting_since);
            }
            // SAFETY: the helper is done with the job; the slot is ours until IDLE.
            let panic = unsafe {
                *self.helper.job.get() = None;
                (*self.helper.panic.get()).take()
            };
            state.store(IDLE, Ordering::Release);
            Settled::Ran(outcome, panic)
        }

        /// Settles, then runs `b` here if the offer was taken back, and resumes a panic
        /// of `b` on the helper.
        fn finish(self) -> Outcome {
            let settled = self.settle();
            let b = self.b;
            // Settled: nothing is left for the drop to do, even if `b` panics below.
            std::mem::forget(self);
            match settled {
                Settled::TakenBack => {
                    // SAFETY: the offer was taken back, so only this thread has `b`.
                    unsafe { (*b)() };
                    Outcome::Alone
                }
                Settled::Ran(outcome, None) => outcome,
                Settled::Ran(_, Some(payload)) => resume_unwind(payload),
            }
        }
    }
    impl Drop for Finish<'_> {
        fn drop(&mut self) {
            // `a` panicked: settle the offer (a panic of `b` too is dropped with it;
            // the first panic is the one that propagates).
            self.settle();
        }
    }
    let finish = Finish {
        helper,
        b: job,
        _b: std::marker::PhantomData,
    };
    a();
    finish.finish()
}

/// One look of the caller's wait for a helper that has claimed its half: a spin hint
/// for the first [`SPIN_FOR_HELPER`] (halves of a split finish within microseconds of
/// each other), a yield after that, so that a helper that has lost its core to another
/// thread (more threads than cores: a test harness, a busy host) can have it back
/// before the caller's time slice ends. `since` is when the wait began, set by the
/// first look.
fn wait_for_helper(since: &mut Option<Instant>) {
    if since.get_or_insert_with(Instant::now).elapsed() < SPIN_FOR_HELPER {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// How long a caller spins for a helper that is still running its half.
const SPIN_FOR_HELPER: Duration = Duration::from_micros(50);

/// How much of a pair of halves to offer the helper, in 1/256ths, kept where the two
/// threads finish together: the helper starts a few hundred nanoseconds after the
/// caller, and on a virtual machine one core may run slower than the other for a
/// while, so an even split leaves one thread waiting. After each call the share moves
/// one step towards the thread that finished first. Which rows go where never changes
/// a result.
pub(crate) struct Balance(AtomicU32);

impl Balance {
    /// Half of the work to each thread, to start.
    pub(crate) const fn new() -> Self {
        Self(AtomicU32::new(128))
    }

    /// The helper's share of `units`, rounded down.
    pub(crate) fn helper_share(&self, units: usize) -> usize {
        units * self.0.load(Ordering::Relaxed) as usize / 256
    }

    /// Moves the share after a call that ended with `outcome`.
    pub(crate) fn record(&self, outcome: Outcome) {
        let share = self.0.load(Ordering::Relaxed);
        let next = match outcome {
            Outcome::HelperFirst => (share + 1).min(192),
            Outcome::CallerFirst => share.saturating_sub(1).max(64),
            Outcome::Alone => share,
        };
        self.0.store(next, Ordering::Relaxed);
    }
}

/// `rayon::join(a, b)`, with `b` offered to the helper instead of rayon's other worker
/// when rayon's pool has two threads: the layers' and optimisers' two-way splits.
///
/// On two cores rayon's idle worker picks a job up 18–23 µs after it is queued (a
/// scratch program timing the start of `b` in `rayon::join(a, b)` with `a` a 50 µs
/// spin, called back to back from a worker, 2 vCPUs of a Zen 5 EPYC: median 18.4 µs,
/// and 22.3–22.7 µs with 5 to 120 µs of serial work between the calls): it polls with
/// `sched_yield`, then sleeps on a futex. The 784-128-10 MLP's training step
/// splits three products of about 50 µs a half, so a fifth of its step was that wait.
/// The helper, spinning on one atomic between jobs, started `b` 0.52–0.66 µs after
/// the offer (median; p99 0.69–2.21 µs; the same calls through this function, the
/// helper running 1,937–2,000 of each 2,000 second halves and the caller the rest),
/// and the step ran 1.28–1.39 times as fast (BENCHMARKS.md).
///
/// With any other number of threads, or with the helper off
/// ([`SmallBatchHelper::Off`]), this is `rayon::join`. A nested call, made while the
/// helper is busy, runs both halves on its thread, as `rayon::join` does when no
/// worker steals: at most two threads work at once. Each half computes what it would
/// on any thread, so results do not depend on who ran it.
pub(crate) fn join<RA: Send, RB: Send>(
    a: impl FnOnce() -> RA + Send,
    b: impl FnOnce() -> RB + Send,
) -> (RA, RB) {
    if rayon::current_num_threads() != 2 || small_batch_helper() == SmallBatchHelper::Off {
        return rayon::join(a, b);
    }
    let mut ra = None;
    let mut rb = None;
    {
        let mut b = Some(b);
        let mut run_b = || {
            if let Some(b) = b.take() {
                rb = Some(b());
            }
        };
        pair(|| ra = Some(a()), &mut run_b);
    }
    match (ra, rb) {
        (Some(ra), Some(rb)) => (ra, rb),
        // `pair` returns only after both halves ran (a panic in either unwinds).
        _ => unreachable!("pair ran both halves"),
    }
}

/// The CPUs the process may run on, and putting a thread on them.
mod affinity {
    /// A set of CPUs.
    #[cfg(target_os = "linux")]
    pub(super) struct Cpus(libc::cpu_set_t);

    #[cfg(target_os = "linux")]
    impl Cpus {
        pub(super) fn count(&self) -> usize {
            // SAFETY: `CPU_COUNT` only reads the set.
            (unsafe { libc::CPU_COUNT(&self.0) }) as usize
        }

        /// Moves the calling thread onto these CPUs; a refusal leaves it where it is.
        pub(super) fn apply_to_this_thread(&self) {
            // SAFETY: the set is a valid `cpu_set_t` of the size passed; pid 0 is the
            // calling thread.
            unsafe {
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0);
            }
        }
    }

    /// The CPUs of the process's main thread (whose id is the process's), which
    /// `taskset` and container limits set; `None` if the system does not say.
    #[cfg(target_os = "linux")]
    pub(super) fn process_cpus() -> Option<Cpus> {
        // SAFETY: a zeroed `cpu_set_t` is the empty set; the call writes at most its
        // size into it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            (libc::sched_getaffinity(libc::getpid(), size, &mut set) == 0).then_some(Cpus(set))
        }
    }

    /// Elsewhere threads are not pinned by their creator's choice.
    #[cfg(not(target_os = "linux"))]
    pub(super) struct Cpus;

    #[cfg(not(target_os = "linux"))]
    impl Cpus {
        pub(super) fn count(&self) -> usize {
            usize::MAX
        }

        pub(super) fn apply_to_this_thread(&self) {}
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn process_cpus() -> Option<Cpus> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn the_helper_takes_offers() {
        if helper().is_none() {
            // rayon limited to one thread: `pair` runs both halves here by design.
            return;
        }
        // The helper spins after each job, so a run of back-to-back calls must see it
        // claim some; allow a long time so a loaded machine cannot fail it.
        let start = Instant::now();
        let mut claimed = false;
        while !claimed && start.elapsed() < Duration::from_secs(5) {
            let mut on_helper = || {
                claimed |= std::thread::current().name() == Some("kiln-pair");
            };
            pair(std::hint::spin_loop, &mut on_helper);
        }
        assert!(claimed, "the helper claimed no offer in 5 s");
    }

    #[test]
    fn the_share_moves_towards_the_thread_that_finished_first_within_bounds() {
        let balance = Balance::new();
        assert_eq!(balance.helper_share(128), 64);
        for _ in 0..16 {
            balance.record(Outcome::CallerFirst);
        }
        assert_eq!(balance.helper_share(128), 56);
        balance.record(Outcome::Alone);
        assert_eq!(balance.helper_share(128), 56);
        for _ in 0..1000 {
            balance.record(Outcome::HelperFirst);
        }
        assert_eq!(balance.helper_share(128), 96, "at most three quarters");
        for _ in 0..1000 {
            balance.record(Outcome::CallerFirst);
        }
        assert_eq!(balance.helper_share(128), 32, "at least a quarter");
        assert_eq!(balance.helper_share(130), 32);
    }

    #[test]
    fn a_call_reports_who_ran_the_second_half() {
        if helper().is_none() {
            return;
        }
        // Halves far longer than the hand-over (the helper, spinning since the last
        // call, claims an offer within microseconds): whichever half is shorter ends
        // first.
        let start = Instant::now();
        let (mut helper_first, mut caller_first) = (false, false);
        while !(helper_first && caller_first) && start.elapsed() < Duration::from_secs(5) {
            let pause = |micros| {
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(micros) {
                    std::hint::spin_loop();
                }
            };
            helper_first |= pair(|| pause(200), &mut || {}) == Outcome::HelperFirst;
            caller_first |= pair(|| pause(20), &mut || pause(200)) == Outcome::CallerFirst;
        }
        assert!(
            helper_first && caller_first,
            "{helper_first} {caller_first}"
        );
    }

    /// Runs `f` on a thread of its own; fails if it does not return within 20 s (a
    /// hang), and returns whether it panicked.
    fn panics_within_time_limit(f: impl FnOnce() + Send + 'static) -> bool {
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let panicked = catch_unwind(AssertUnwindSafe(f)).is_err();
            let _ = send.send(panicked);
        });
        receive
            .recv_timeout(Duration::from_secs(20))
            .expect("pair hung instead of returning or panicking")
    }

    #[test]
    fn a_panic_in_either_half_surfaces_as_a_panic_and_the_helper_serves_on() {
        if helper().is_none() {
            return;
        }
        // `b` panics on the helper: the caller panics (not hangs), until the helper
        // has taken one such offer.
        assert!(panics_within_time_limit(|| {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                let mut b = || {
                    if std::thread::current().name() == Some("kiln-pair") {
                        panic!("second half on the helper");
                    }
                };
                pair(|| std::thread::sleep(Duration::from_micros(300)), &mut b);
            }
        }));
        // `b` panics on the caller (the offer taken back, `a` too short for the
        // helper to claim it, or the helper busy).
        assert!(panics_within_time_limit(|| {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                let mut b = || {
                    if std::thread::current().name() != Some("kiln-pair") {
                        panic!("second half on the caller");
                    }
                };
                pair(|| {}, &mut b);
            }
        }));
        // `a` panics, with `b` offered.
        assert!(panics_within_time_limit(|| {
            pair(|| panic!("first half"), &mut || {
                std::thread::sleep(Duration::from_micros(100))
            });
        }));
        // Afterwards the slot is free and both halves still run exactly once, from
        // several threads at once, while others keep panicking.
        assert!(!panics_within_time_limit(|| {
            std::thread::scope(|s| {
                for t in 0..4 {
                    s.spawn(move || {
                        for i in 0..3000usize {
                            let (left, right) = (AtomicUsize::new(0), AtomicUsize::new(0));
                            let fail = t % 2 == 1 && i % 7 == 0;
                            let result = catch_unwind(AssertUnwindSafe(|| {
                                pair(
                                    || {
                                        left.fetch_add(1, Ordering::Relaxed);
                                        if fail && i % 2 == 0 {
                                            panic!("a");
                                        }
                                    },
                                    &mut || {
                                        right.fetch_add(1, Ordering::Relaxed);
                                        if fail && i % 2 == 1 {
                                            panic!("b");
                                        }
                                    },
                                );
                            }));
                            if result.is_ok() {
                                assert_eq!(left.load(Ordering::Relaxed), 1);
                                assert_eq!(right.load(Ordering::Relaxed), 1);
                            } else {
                                assert!(fail, "only a failing half panics");
                            }
                        }
                    });
                }
            });
        }));
        let (mut left, mut right) = (0, 0);
        pair(|| left += 1, &mut || right += 1);
        assert_eq!((left, right), (1, 1));
    }

    #[test]
    fn both_halves_run_exactly_once_hot_parked_and_contended() {
        let run = |calls: usize, pause: Duration| {
            for i in 0..calls {
                let (left, right) = (AtomicUsize::new(0), AtomicUsize::new(0));
                let mut right_half = || {
                    right.fetch_add(i + 1, Ordering::Relaxed);
                };
                pair(
                    || {
                        left.fetch_add(i + 1, Ordering::Relaxed);
                    },
                    &mut right_half,
                );
                assert_eq!(left.load(Ordering::Relaxed), i + 1);
                assert_eq!(right.load(Ordering::Relaxed), i + 1);
                std::thread::sleep(pause);
            }
        };
        // Back to back (the helper spins), with pauses longer than its spin (it
        // parks and is woken), and from four threads at once (the slot is contended).
        run(2000, Duration::ZERO);
        run(20, Duration::from_millis(1));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| run(2000, Duration::ZERO));
            }
        });
    }

    /// A pool of `threads` threads running `f`: `join` asks the pool it runs on.
    fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a rayon pool")
            .install(f)
    }

    #[test]
    fn join_returns_both_results_and_runs_the_second_half_on_the_helper() {
        let on_helper = || std::thread::current().name() == Some("kiln-pair");
        in_pool(2, || {
            // Back to back the helper spins, so some second halves run on it; allow
            // a long time so a loaded machine cannot fail this.
            let start = Instant::now();
            let mut helper_ran = false;
            while !helper_ran && start.elapsed() < Duration::from_secs(5) {
                let (a, (b, there)) = join(|| 6 * 7, || (String::from("b"), on_helper()));
                assert_eq!((a, b.as_str()), (42, "b"));
                helper_ran |= there;
            }
            assert!(
                helper_ran || helper().is_none(),
                "the helper ran no second half in 5 s"
            );
        });
        // Three threads: rayon's join, whose halves never run on the helper.
        in_pool(3, || {
            for _ in 0..200 {
                let (a, there) = join(|| 1, on_helper);
                assert_eq!(a, 1);
                assert!(!there, "a pool of three threads uses rayon's join");
            }
        });
    }

    #[test]
    fn nested_joins_run_every_half_once() {
        // A split inside a half (the helper busy) runs both of its halves on its own
        // thread; four levels deep, every leaf runs exactly once.
        fn tree(depth: u32, leaves: &AtomicUsize) -> usize {
            if depth == 0 {
                leaves.fetch_add(1, Ordering::Relaxed);
                return 1;
            }
            let (a, b) = join(|| tree(depth - 1, leaves), || tree(depth - 1, leaves));
            a + b
        }
        in_pool(2, || {
            for _ in 0..200 {
                let leaves = AtomicUsize::new(0);
                assert_eq!(tree(4, &leaves), 16);
                assert_eq!(leaves.load(Ordering::Relaxed), 16);
            }
        });
    }

    #[test]
    fn a_panic_in_a_joined_half_surfaces_and_joins_go_on() {
        for second in [false, true] {
            let outcome = std::panic::catch_unwind(|| {
                in_pool(2, || {
                    join(
                        || assert!(second, "first half"),
                        || assert!(!second, "second half"),
                    )
                })
            });
            assert!(outcome.is_err(), "the panic of a half must surface");
            assert_eq!(in_pool(2, || join(|| 1, || 2)), (1, 2));
        }
    }
}
