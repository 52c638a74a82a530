//! The benchmark workloads of `BENCHMARKS.md` in candle and burn (flex backend), each
//! written the way that library's own examples write them, and in kiln within the same
//! bare loop (for a peak RSS without criterion in the process). f32, synthetic data
//! from a fixed seed, two threads (RAYON_NUM_THREADS, set by `compare.py`).
//!
//!     cargo run --release -- <candle|burn|kiln> <workload>
//!     cargo run --release -- peak
//!
//! Prints one JSON object: the median over timed runs (samples/s for training and
//! batch-1024 inference, µs for batch-1 latency), the library's version and the
//! process's peak resident memory; for kiln also the model's forward FLOPs per sample.
//! `peak` prints the processor's measured f32 FMA peak on RAYON_NUM_THREADS threads, in
//! GFLOP/s (`peak.rs`).

use std::time::Instant;

#[cfg(feature = "peers")]
mod burn_peer;
#[cfg(feature = "peers")]
mod candle_peer;
mod kiln_peer;
mod peak;

/// The workloads, by the names `compare.py` uses.
pub const WORKLOADS: [&str; 8] = [
    "mlp_small",
    "mlp_wide",
    "cnn",
    "lstm",
    "infer_1_us",
    "infer_1024",
    "transformer",
    "resnet20",
];

/// Median seconds per call of `step`, timed like `peers.py`: at least 5 warm-up calls
/// and half a second (thread pools and caches in their steady state), then 30 samples
/// of up to 50 calls each.
pub fn median_seconds(mut step: impl FnMut()) -> f64 {
    let warmup = Instant::now();
    let mut calls = 0;
    while calls < 5 || warmup.elapsed().as_secs_f64() < 0.5 {
        step();
        calls += 1;
    }
    let mut times = Vec::with_capacity(30);
    for _ in 0..30 {
        let start = Instant::now();
        let mut n = 0u32;
        loop {
            step();
            n += 1;
            if start.elapsed().as_secs_f64() >= 0.2 / 30.0 * 10.0 || n >= 50 {
                break;
            }
        }
        times.push(start.elapsed().as_secs_f64() / f64::from(n));
    }
    times.sort_by(f64::total_cmp);
    (times[14] + times[15]) / 2.0
}

/// Turns seconds per call at `batch` into the reported number for `workload`.
pub fn report(workload: &str, batch: usize, seconds: f64) -> f64 {
    if workload == "infer_1_us" {
        seconds * 1e6
    } else {
        batch as f64 / seconds
    }
}

/// A fixed pseudo-random sequence (SplitMix64), so both libraries see the same data.
pub struct Data(u64);

impl Data {
    pub fn new(seed: u64) -> Self {
        Data(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// `n` values uniform in [0, 1).
    pub fn uniform(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .collect()
    }
    /// `n` class labels below 10.
    pub fn labels(&mut self, n: usize) -> Vec<u32> {
        self.tokens(n, 10)
    }
    /// `n` integers below `below`.
    pub fn tokens(&mut self, n: usize, below: u64) -> Vec<u32> {
        (0..n).map(|_| (self.next() % below) as u32).collect()
    }
    /// T6's batch: `batch` windows of `LM_STEPS + 1` token ids below `LM_VOCAB`; the first
    /// `LM_STEPS` of each are the input, the last `LM_STEPS` the labels (next tokens).
    pub fn lm_windows(&mut self, batch: usize) -> (Vec<u32>, Vec<u32>) {
        let tokens = self.tokens(batch * (LM_STEPS + 1), LM_VOCAB as u64);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for window in tokens.chunks_exact(LM_STEPS + 1) {
            x.extend_from_slice(&window[..LM_STEPS]);
            y.extend_from_slice(&window[1..]);
        }
        (x, y)
    }
}

/// T6's shape, as `peers.py`'s `LM` has it (kiln's model spells the same numbers in
/// its `model!`).
pub const LM_VOCAB: usize = 96;
pub const LM_STEPS: usize = 64;
pub const LM_DIM: usize = 128;
pub const LM_HEADS: usize = 4;
pub const LM_FF: usize = 512;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("peak") {
        let threads = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        match peak::measure(threads) {
            Some((gflops, isa)) => {
                println!("{{\"value\": {gflops}, \"version\": \"{isa} on {threads} threads\"}}")
            }
            None => println!("{{\"absent\": \"no AVX-512F or AVX2+FMA on this processor, or KILN_SIMD=baseline\"}}"),
        }
        return;
    }
    let (Some(library), Some(workload)) = (args.first(), args.get(1)) else {
        eprintln!(
            "usage: kiln-bench-peers <candle|burn|kiln> <workload>; workloads: {WORKLOADS:?}"
        );
        std::process::exit(2);
    };
    if !WORKLOADS.contains(&workload.as_str()) {
        eprintln!("unknown workload {workload}; workloads: {WORKLOADS:?}");
        std::process::exit(2);
    }
    let (value, version) = match library.as_str() {
        #[cfg(feature = "peers")]
        "candle" => (candle_peer::run(workload), candle_peer::VERSION),
        #[cfg(feature = "peers")]
        "burn" => (burn_peer::run(workload), burn_peer::VERSION),
        "kiln" => (kiln_peer::run(workload), kiln_peer::VERSION),
        other => {
            eprintln!("unknown library {other}; expected candle, burn (both need the default `peers` feature) or kiln");
            std::process::exit(2);
        }
    };
    let rss = peak_rss_kib().map_or("null".to_string(), |kib| kib.to_string());
    let flops = if library == "kiln" {
        format!(
            ", \"flops_per_sample\": {}",
            kiln_peer::flops_per_sample(workload)
        )
    } else {
        String::new()
    };
    println!("{{\"value\": {value}, \"version\": \"{version}\", \"peak_rss_kib\": {rss}{flops}}}");
}

/// This process's own peak resident set (`VmHWM`), on Linux. The parent's `wait4`
/// would report at least the parent's own resident set at fork time (about 14 MiB for
/// the Python that runs `compare.py`), which hid the differences between small ones.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
