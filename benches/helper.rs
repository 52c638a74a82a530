//! What each choice of the batch-1 helper thread costs (`kiln::threads`):
//! `cargo bench --bench helper`.
//!
//! The T4 model (784 → 128 ReLU → 10) answers batch-1 requests through `infer` under
//! each setting, in rounds that visit every setting in turn (the order rotating), so
//! that the host's drift falls on all alike. Two kinds of traffic: back to back, and
//! one request per millisecond (the helper, if it spins less than that, has parked
//! before each request). For each setting and traffic it prints the median latency
//! over the rounds and the process's CPU time per request (what the spinning costs
//! the machine: with one request per millisecond, a 200 µs spin is about 0.2 ms of a
//! core per request). `KILN_HELPER_ROUNDS` sets the rounds (default 40).
use kiln::prelude::*;
use kiln::threads::{set_small_batch_helper, SmallBatchHelper};
use std::time::{Duration, Instant};

kiln::model! { pub struct Mlp { input: [784], fc1: Dense(128), Relu, fc2: Dense(10) } }

/// The process's CPU time (user + system) so far.
fn cpu_time() -> Duration {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed rusage is valid for the call to fill.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        time(usage.ru_utime) + time(usage.ru_stime)
    }
    #[cfg(not(target_os = "linux"))]
    Duration::ZERO
}

fn main() {
    let rounds: usize = std::env::var("KILN_HELPER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
        .max(3);
    let settings = [
        ("off", SmallBatchHelper::Off),
        ("spin 0", SmallBatchHelper::Spin(Duration::ZERO)),
        (
            "spin 20 µs",
            SmallBatchHelper::Spin(Duration::from_micros(20)),
        ),
        ("spin 200 µs (default)", SmallBatchHelper::default()),
        (
            "spin 2 ms",
            SmallBatchHelper::Spin(Duration::from_millis(2)),
        ),
    ];
    let traffic = [
        ("back to back", None),
        ("1 per ms", Some(Duration::from_millis(1))),
    ];
    let mut net = Mlp::<f32>::new(0);
    let x: Vec<f32> = (0..784).map(|i| (i % 17) as f32 / 17.0).collect();
    let x = TensorRef::<f32, Shape1<784>>::new(&x).unwrap();
    for (traffic_name, gap) in traffic {
        let requests = if gap.is_some() { 50 } else { 2000 };
        // [setting] -> per-round (median latency, CPU per request)
        let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); settings.len()];
        let mut latencies = Vec::with_capacity(requests);
        for round in 0..rounds + 1 {
            for k in 0..settings.len() {
                let which = (k + round) % settings.len();
                set_small_batch_helper(settings[which].1);
                // Let a helper that was spinning under the last setting settle.
                std::thread::sleep(Duration::from_millis(3));
                latencies.clear();
                let cpu = cpu_time();
                for _ in 0..requests {
                    if let Some(gap) = gap {
                        std::thread::sleep(gap);
                    }
                    let t = Instant::now();
                    std::hint::black_box(net.infer(x));
                    latencies.push(t.elapsed().as_secs_f64());
                }
                let cpu = (cpu_time() - cpu).as_secs_f64() / requests as f64;
                latencies.sort_by(f64::total_cmp);
                if round > 0 {
                    results[which].push((latencies[requests / 2], cpu));
                }
            }
        }
        println!("{traffic_name} ({requests} requests a round, {rounds} rounds):");
        for (k, (name, _)) in settings.iter().enumerate() {
            let mut lat: Vec<f64> = results[k].iter().map(|r| r.0).collect();
            let mut cpu: Vec<f64> = results[k].iter().map(|r| r.1).collect();
            lat.sort_by(f64::total_cmp);
            cpu.sort_by(f64::total_cmp);
            let n = lat.len();
            println!(
                "  {name:<22} latency {:>6.2} µs (rounds' quartiles {:.2}..{:.2}); process CPU {:>7.1} µs a request",
                lat[n / 2] * 1e6,
                lat[n / 4] * 1e6,
                lat[3 * n / 4] * 1e6,
                cpu[n / 2] * 1e6,
            );
        }
    }
    set_small_batch_helper(SmallBatchHelper::default());
}
