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
//! Throughput is reported in samples. Beside each workload, `gemm/<workload>` times
//! faer's own GEMM on that workload's largest matrix product (throughput in FLOPs), the
//! yardstick for kiln's GFLOP/s; the models' `FLOPS_PER_SAMPLE` constants are written to
//! `target/criterion/flops_per_sample.json` for the comparison script. `scripts/bench/compare.py` runs these and the
//! same workloads in other frameworks and prints the ratios; see BENCHMARKS.md.

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
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

fn train<M: Model<f32> + Send>(
    c: &mut Criterion,
    name: &str,
    model: M,
    batch: usize,
    opt: impl Optimizer<f32> + Send,
) {
    train_in(c, "train", name, model, batch, opt);
}

fn train_in<M: Model<f32> + Send>(
    c: &mut Criterion,
    group: &str,
    name: &str,
    mut model: M,
    batch: usize,
    mut opt: impl Optimizer<f32> + Send,
) {
    let x = synthetic(batch * <M::Input as Shape>::SIZE, 1);
    let y = labels(batch);
    let x = TensorRef::<f32, M::Input>::new(&x).expect("whole batch");
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function(BenchmarkId::new(name, batch), |b| {
        // On a rayon worker, as `fit` runs its loop.
        rayon::scope(|_| {
            b.iter(|| {
                model
                    .train_step(x, &y, &CrossEntropy::default(), &mut opt)
                    .expect("finite loss")
            })
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
    // What the non-finite guard costs: the MLPs without it (plain SGD then updates
    // inside the backward pass), and the small one with Adam (stored gradients either
    // way, so the difference is the check alone).
    let unguarded = |mut model: MlpSmall<f32>| {
        model.set_nonfinite_guard(false);
        model
    };
    let mut wide = MlpWide::<f32>::new(0);
    wide.set_nonfinite_guard(false);
    train_in(
        c,
        "unguarded",
        "mlp_small",
        unguarded(MlpSmall::new(0)),
        128,
        Sgd::new(0.05),
    );
    train_in(c, "unguarded", "mlp_wide", wide, 128, Sgd::new(0.05));
    train_in(
        c,
        "adam",
        "mlp_small",
        MlpSmall::<f32>::new(0),
        128,
        Adam::new(1e-3),
    );
    let model = unguarded(MlpSmall::new(0));
    train_in(
        c,
        "adam_unguarded",
        "mlp_small",
        model,
        128,
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

/// faer's GEMM alone at each workload's largest product, `[m, k] × [k, n]`: the forward
/// GEMM of the first dense layer (T1, T2 batch 128; T4), the second convolution over the
/// whole batch as one im2col product (T3), and one LSTM step's gates (T5).
fn gemm(c: &mut Criterion) {
    use faer::linalg::matmul::matmul;
    use faer::{Accum, Mat, Par};
    let shapes = [
        ("mlp_small", 128, 784, 128),
        ("mlp_wide", 128, 1024, 1024),
        ("cnn", 64, 288, 64 * 121),
        ("lstm", 32, 192, 512),
        ("infer_1_us", 1, 784, 128),
        ("infer_1024", 1024, 784, 128),
    ];
    let mut group = c.benchmark_group("gemm");
    for (name, m, k, n) in shapes {
        let a = Mat::<f32>::from_fn(m, k, |i, j| ((i * 7 + j * 3) % 11) as f32 * 0.1);
        let b = Mat::<f32>::from_fn(k, n, |i, j| ((i * 5 + j) % 13) as f32 * 0.1);
        let mut out = Mat::<f32>::zeros(m, n);
        let flops = 2 * m * k * n;
        // Threads only where they pay, as kiln's kernels decide (2 MFLOP and up).
        let par = if flops >= 2_000_000 {
            Par::rayon(0)
        } else {
            Par::Seq
        };
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(name, |bench| {
            bench.iter(|| {
                matmul(
                    out.as_mut(),
                    Accum::Replace,
                    a.as_ref(),
                    b.as_ref(),
                    1.0,
                    par,
                )
            })
        });
    }
    group.finish();
}

/// The floor under batch-1 latency: reading the T4 model's first weight (784 × 128 f32,
/// 401 KB) once, on one core, from its L2 cache, with nothing else done. Two cores can at
/// best halve it.
fn stream(c: &mut Criterion) {
    let weight = synthetic(784 * 128, 4);
    let mut group = c.benchmark_group("stream");
    group.throughput(Throughput::Bytes(std::mem::size_of_val(&weight[..]) as u64));
    group.bench_function("infer_1_us", |b| {
        b.iter(|| sum(std::hint::black_box(&weight)))
    });
    group.finish();
}

/// The sum of `values` as 128 lane-wise partial sums, which the compiler keeps in vector
/// registers (eight of AVX-512, sixteen of AVX2) without reassociating anything; the tail
/// is ignored. Loads as wide as the processor has: with the baseline's 16-byte loads an
/// AVX2 core read the weight at half the rate its kernels do, and the "floor" was above
/// kiln's latency.
fn sum(values: &[f32]) -> f32 {
    // Inlined into `wide` and `avx2`, so that it is compiled with their vectors there.
    #[inline(always)]
    fn lanes(values: &[f32]) -> f32 {
        let mut acc = [0.0f32; 128];
        for chunk in values.chunks_exact(128) {
            for (a, &v) in acc.iter_mut().zip(chunk) {
                *a += v;
            }
        }
        acc.iter().sum()
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn wide(values: &[f32]) -> f32 {
            lanes(values)
        }
        #[target_feature(enable = "avx2")]
        fn avx2(values: &[f32]) -> f32 {
            lanes(values)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor supports AVX-512F, checked just above.
            return unsafe { wide(values) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor supports AVX2, checked just above.
            return unsafe { avx2(values) };
        }
    }
    lanes(values)
}

/// Writes each model's compile-time `FLOPS_PER_SAMPLE` where `compare.py` reads it.
fn write_flops() {
    let flops = format!(
        "{{\"mlp_small\": {}, \"mlp_wide\": {}, \"cnn\": {}, \"lstm\": {}}}\n",
        MlpSmall::<f32>::FLOPS_PER_SAMPLE,
        MlpWide::<f32>::FLOPS_PER_SAMPLE,
        Cnn::<f32>::FLOPS_PER_SAMPLE,
        LstmClassifier::<f32>::FLOPS_PER_SAMPLE,
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("criterion");
    std::fs::create_dir_all(&dir).expect("criterion directory");
    std::fs::write(dir.join("flops_per_sample.json"), flops).expect("flops_per_sample.json");
}

fn benches() {
    write_flops();
    let mut c = Criterion::default().configure_from_args();
    training(&mut c);
    inference(&mut c);
    gemm(&mut c);
    stream(&mut c);
    // For compare.py: this process's own peak resident set, which the parent's wait4
    // cannot report below its own resident set at fork time.
    if let Some(line) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
    {
        eprintln!(
            "peak_rss_kib {}",
            line.split_whitespace().nth(1).unwrap_or("?")
        );
    }
}

criterion_main!(benches);
