//! What the non-finite guard costs a training step: the same model trained with the
//! guard on and off, in alternating blocks of steps in one process, so that the
//! host's drift falls on both alike; prints each pair's ratio of total times and the
//! median and quartiles of the per-block ratios. `cargo bench --bench guard`.
//!
//! T1 and T2 with plain SGD (guarded: the dense weights' products deferred after the
//! checks; unguarded: made inside the backward pass) and T1 with Adam (stored
//! gradients either way).
use kiln::prelude::*;
use std::time::Instant;

kiln::model! { pub struct Small { input: [784], fc1: Dense(128), Relu, fc2: Dense(10) } }
kiln::model! { pub struct Wide { input: [784], fc1: Dense(1024), Relu, fc2: Dense(1024), Relu, fc3: Dense(10) } }

fn ab<M: Model<f32, Input = Shape1<784>> + Send>(
    name: &str,
    adam: bool,
    blocks: usize,
    per: usize,
) {
    let batch = 128;
    let x: Vec<f32> = (0..batch * 784)
        .map(|i| ((i * 29) % 253) as f32 / 253.0)
        .collect();
    let y: Vec<usize> = (0..batch).map(|i| (i * 7) % 10).collect();
    let x = TensorRef::<f32, Shape1<784>>::new(&x).unwrap();
    let (mut a, mut b) = (M::with_seed(0), M::with_seed(0));
    b.set_nonfinite_guard(false);
    let (mut sa, mut sb) = (Sgd::new(0.05), Sgd::new(0.05));
    let (mut aa, mut ab_) = (Adam::new(1e-3), Adam::new(1e-3));
    let loss = CrossEntropy::default();
    let (mut ta, mut tb) = (0.0, 0.0);
    let mut ratios = Vec::new();
    rayon::scope(|_| {
        for block in 0..blocks {
            let t = Instant::now();
            for _ in 0..per {
                if adam {
                    a.train_step(x, &y[..], &loss, &mut aa).unwrap();
                } else {
                    a.train_step(x, &y[..], &loss, &mut sa).unwrap();
                }
            }
            let da = t.elapsed().as_secs_f64();
            let t = Instant::now();
            for _ in 0..per {
                if adam {
                    b.train_step(x, &y[..], &loss, &mut ab_).unwrap();
                } else {
                    b.train_step(x, &y[..], &loss, &mut sb).unwrap();
                }
            }
            let db = t.elapsed().as_secs_f64();
            if block >= 2 {
                ta += da;
                tb += db;
                ratios.push(da / db);
            }
        }
    });
    ratios.sort_by(|p, q| p.partial_cmp(q).unwrap());
    let n = ratios.len();
    println!("{name}: guarded {:.1} µs, unguarded {:.1} µs per step; total ratio {:.4}; median block ratio {:.4} (quartiles {:.3}..{:.3}, {n} blocks)",
        ta / ((n * per) as f64) * 1e6, tb / ((n * per) as f64) * 1e6, ta / tb, ratios[n / 2], ratios[n / 4], ratios[3 * n / 4]);
}

fn main() {
    ab::<Small>("T1 mlp_small SGD", false, 202, 20);
    ab::<Small>("T1 mlp_small Adam", true, 202, 20);
    ab::<Wide>("T2 mlp_wide SGD", false, 62, 5);
}
