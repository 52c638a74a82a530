//! The benchmark workloads, kiln's side (f32, synthetic data from a fixed seed, rayon's
//! default of one thread per core):
//!
//! - T1 `mlp_small`: 784 → 128 ReLU → 10, cross-entropy, SGD lr 0.05, batch 128.
//! - T2 `mlp_wide`: 784 → 1024 ReLU → 1024 ReLU → 10, same, batch 128.
//! - T3 `cnn`: Conv 32 3x3 ReLU, MaxPool 2, Conv 64 3x3 ReLU, MaxPool 2, Dense 128 ReLU,
//!   Dense 10, Adam 1e-3, batch 64.
//! - T4 `infer`: the T1 model's forward pass at batch 1 (latency) and 1024 (throughput).
//! - T5 `lstm`: LSTM 64 → 128 over 32 steps, last hidden state → Dense 10, Adam, batch 32.
//!
//! Throughput is reported in samples. `scripts/bench/compare.py` runs these and the
//! same workloads in other frameworks and prints the ratios; see BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln::prelude::*;

kiln::model! {
    struct MlpSmall { input: [784], fc1: Dense(128), Relu, fc2: Dense(10) }
}
kiln::model! {
    struct MlpWide { input: [784], fc1: Dense(1024), Relu, fc2: Dense(1024), Relu, fc3: Dense(10) }
}
kiln::model! {
    struct Cnn {
        input: [1, 28, 28],
        conv1: Conv2d(32, kernel = 3), Relu,
        MaxPool2d(2),
        conv2: Conv2d(64, kernel = 3), Relu,
        MaxPool2d(2, floor = true),
        Flatten,
        fc1: Dense(128), Relu,
        fc2: Dense(10),
    }
}
kiln::model! {
    struct LstmClassifier { input: [32, 64], lstm: Lstm(128), LastStep, fc: Dense(10) }
}

/// `n` values in [0, 1) from a fixed xorshift stream.
fn synthetic(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

fn labels(batch: usize) -> Vec<usize> {
    (0..batch).map(|i| (i * 7) % 10).collect()
}

fn train<M: Model<f32>>(
    c: &mut Criterion,
    name: &str,
    mut model: M,
    batch: usize,
    mut opt: impl Optimizer<f32>,
) {
    let x = synthetic(batch * <M::Input as Shape>::SIZE, 1);
    let y = labels(batch);
    let x = TensorRef::<f32, M::Input>::new(&x).expect("whole batch");
    let mut group = c.benchmark_group("train");
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function(BenchmarkId::new(name, batch), |b| {
        b.iter(|| {
            model
                .train_step(x, &y, &CrossEntropy::default(), &mut opt)
                .expect("finite loss")
        })
    });
    group.finish();
}

fn training(c: &mut Criterion) {
    train(c, "mlp_small", MlpSmall::<f32>::new(0), 128, Sgd::new(0.05));
    train(c, "mlp_wide", MlpWide::<f32>::new(0), 128, Sgd::new(0.05));
    train(c, "cnn", Cnn::<f32>::new(0), 64, Adam::new(1e-3));
    train(
        c,
        "lstm",
        LstmClassifier::<f32>::new(0),
        32,
        Adam::new(1e-3),
    );
}

fn inference(c: &mut Criterion) {
    let mut model = MlpSmall::<f32>::new(0);
    let mut group = c.benchmark_group("infer");
    for batch in [1, 1024] {
        let x = synthetic(batch * 784, 2);
        let x = TensorRef::<f32, Shape1<784>>::new(&x).expect("whole batch");
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("mlp_small", batch), |b| {
            b.iter(|| model.infer(x)[0])
        });
    }
    group.finish();
}

criterion_group!(benches, training, inference);
criterion_main!(benches);
