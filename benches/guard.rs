//! What the non-finite guard costs a training step. `cargo bench --bench guard`.
//!
//! Two copies of a model train on the same batch in one process, in rounds: each
//! round times a block of steps of each copy, one with the guard on and one with it
//! off, and takes the ratio guarded / unguarded. The roles swap every round and the
//! order every other round, so that neither the host's drift, nor which copy runs
//! first, nor where each copy's buffers happen to sit in memory can lean on the
//! ratio. Prints the geometric mean of the rounds' ratios with its 95 % confidence
//! interval (from the spread of their logarithms), the median and the quartiles.
//!
//! T1 and T2 with plain SGD (guarded: the dense weights' products deferred after the
//! checks; unguarded: made inside the backward pass) and with Adam (stored gradients
//! either way: the guard adds its checks alone). `KILN_GUARD_ROUNDS` sets T1's rounds (default 600; T2 runs
//! a tenth as many, of a quarter as many steps each); `KILN_GUARD_ONLY` keeps the
//! workloads whose name contains it (`T2`, `SGD`, `T1 mlp_small Adam`).
use kiln::prelude::*;
use std::time::Instant;

kiln::model! { pub struct Small { input: [784], fc1: Dense(128), Relu, fc2: Dense(10) } }
kiln::model! { pub struct Wide { input: [784], fc1: Dense(1024), Relu, fc2: Dense(1024), Relu, fc3: Dense(10) } }

fn ab<M: Model<f32, Input = Shape1<784>> + Send>(
    name: &str,
    adam: bool,
    rounds: usize,
    per: usize,
) {
    let batch = 128;
    let x: Vec<f32> = (0..batch * 784)
        .map(|i| ((i * 29) % 253) as f32 / 253.0)
        .collect();
    let y: Vec<usize> = (0..batch).map(|i| (i * 7) % 10).collect();
    let x = TensorRef::<f32, Shape1<784>>::new(&x).unwrap();
    let loss = CrossEntropy::default();
    let mut models = [M::with_seed(0), M::with_seed(0)];
    let mut sgd = [Sgd::new(0.05), Sgd::new(0.05)];
    let mut adams = [Adam::new(1e-3), Adam::new(1e-3)];
    let mut time_block = |which: usize, guarded: bool| {
        let model = &mut models[which];
        model.set_nonfinite_guard(guarded);
        // One step untimed: the first guarded SGD step after the weights were written
        // otherwise (here: unguarded) measures their largest magnitudes, once.
        let mut t = Instant::now();
        for step in 0..=per {
            if step == 1 {
                t = Instant::now();
            }
            if adam {
                model
                    .train_step(x, &y[..], &loss, &mut adams[which])
                    .unwrap();
            } else {
                model.train_step(x, &y[..], &loss, &mut sgd[which]).unwrap();
            }
        }
        t.elapsed().as_secs_f64()
    };
    let warm_up = 4;
    let (mut guarded_total, mut unguarded_total) = (0.0, 0.0);
    let mut ratios = Vec::with_capacity(rounds);
    for round in 0..rounds + warm_up {
        // Copy `guarded` has the guard on; it runs first in rounds 0, 1 of every 4.
        let guarded = round % 2;
        let (first, second) = if round % 4 < 2 {
            (guarded, 1 - guarded)
        } else {
            (1 - guarded, guarded)
        };
        let t_first = time_block(first, first == guarded);
        let t_second = time_block(second, second == guarded);
        let (on, off) = if first == guarded {
            (t_first, t_second)
        } else {
            (t_second, t_first)
        };
        if round >= warm_up {
            guarded_total += on;
            unguarded_total += off;
            ratios.push(on / off);
        }
    }
    let n = ratios.len() as f64;
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let mean = logs.iter().sum::<f64>() / n;
    let sd = (logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let half = 1.96 * sd / n.sqrt();
    ratios.sort_by(f64::total_cmp);
    let q = |p: f64| ratios[((ratios.len() - 1) as f64 * p).round() as usize];
    let steps = n * per as f64;
    println!(
        "{name}: guarded {:.1} µs, unguarded {:.1} µs per step; ratio {:.4} (95 % CI {:.4}..{:.4}); \
         median {:.4}, quartiles {:.3}..{:.3}; {} rounds of {per} steps",
        guarded_total / steps * 1e6,
        unguarded_total / steps * 1e6,
        mean.exp(),
        (mean - half).exp(),
        (mean + half).exp(),
        q(0.5),
        q(0.25),
        q(0.75),
        ratios.len(),
    );
}

fn main() {
    let rounds = std::env::var("KILN_GUARD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600usize)
        .max(8);
    // `KILN_GUARD_ONLY=T2` (say) runs the workloads whose name contains it.
    let only = std::env::var("KILN_GUARD_ONLY").unwrap_or_default();
    let wanted = |name: &str| name.contains(only.as_str());
    rayon::scope(|_| {
        for (name, adam) in [("T1 mlp_small SGD", false), ("T1 mlp_small Adam", true)] {
            if wanted(name) {
                ab::<Small>(name, adam, rounds, 20);
            }
        }
        for (name, adam) in [("T2 mlp_wide SGD", false), ("T2 mlp_wide Adam", true)] {
            if wanted(name) {
                ab::<Wide>(name, adam, rounds / 10, 5);
            }
        }
    });
}
