//! The workloads in kiln, in the same bare loop and timing as the peers: what a
//! program that only trains (or serves) with kiln costs in time and memory, without
//! criterion's statistics in the process. The training loops run on rayon's pool, as
//! `fit` runs them.

use kiln::prelude::*;

use crate::{median_seconds, report, Data};

pub const VERSION: &str = "kiln 0.1";

kiln::model! {
    struct MlpSmall { input: [784], Dense(128), Relu, Dense(10) }
}

kiln::model! {
    struct MlpWide { input: [784], Dense(1024), Relu, Dense(1024), Relu, Dense(10) }
}

kiln::model! {
    struct Cnn {
        input: [1, 28, 28],
        Conv2d(32, kernel = 3), Relu, MaxPool2d(2),
        Conv2d(64, kernel = 3), Relu, MaxPool2d(2, floor = true),
        Flatten, Dense(128), Relu, Dense(10),
    }
}

kiln::model! {
    struct LstmClassifier { input: [32, 64], Lstm(128), LastStep, Dense(10) }
}

kiln::model! {
    /// T6: a causal language model of two pre-norm transformer blocks.
    block PreNorm(dim, heads, ff) {
        attention: Residual { ln1: LayerNorm, attn: MultiHeadAttention(heads = heads, causal = true) },
        feed_forward: Residual { ln2: LayerNorm, ff1: Dense(ff), Gelu, ff2: Dense(dim) },
    }
    struct TransformerLm {
        input: [64],
        tok: Embedding(vocab = 96, dim = 128),
        pos: PositionalEmbedding,
        blocks: { PreNorm(128, 4, 512), PreNorm(128, 4, 512) },
        ln_f: LayerNorm,
        head: Dense(96),
    }
}

kiln::model! {
    /// T7: ResNet-20 for [3, 32, 32] images (He et al., 2016), projection shortcuts.
    block Basic(channels) {
        Residual {
            conv1: Conv2d(channels, kernel = 3, padding = 1, bias = false), bn1: BatchNorm2d, Relu,
            conv2: Conv2d(channels, kernel = 3, padding = 1, bias = false), bn2: BatchNorm2d,
        },
        Relu,
    }
    block Down(channels) {
        Add {
            main: {
                Conv2d(channels, kernel = 3, stride = 2, padding = 1, bias = false), BatchNorm2d, Relu,
                Conv2d(channels, kernel = 3, padding = 1, bias = false), BatchNorm2d,
            },
            shortcut: { Conv2d(channels, kernel = 1, stride = 2, bias = false), BatchNorm2d },
        },
        Relu,
    }
    struct ResNet20 {
        input: [3, 32, 32],
        conv1: Conv2d(16, kernel = 3, padding = 1, bias = false), bn1: BatchNorm2d, Relu,
        layer1: { Basic(16), Basic(16), Basic(16) },
        layer2: { Down(32), Basic(32), Basic(32) },
        layer3: { Down(64), Basic(64), Basic(64) },
        GlobalAvgPool,
        fc: Dense(10),
    }
}

/// Median seconds per training step on a batch of `x` (uniform in [0, 1)) and `y`
/// (labels below 10).
fn train<M: Model<f32> + Send>(
    model: M,
    batch: usize,
    opt: impl Optimizer<f32> + Send,
    data: &mut Data,
) -> f64 {
    let x = data.uniform(batch * <M::Input as Shape>::SIZE);
    let y: Vec<usize> = data.labels(batch).into_iter().map(|l| l as usize).collect();
    train_on(model, &x, &y, opt)
}

fn train_on<M: Model<f32> + Send>(
    mut model: M,
    x: &[f32],
    y: &[usize],
    mut opt: impl Optimizer<f32> + Send,
) -> f64 {
    let x = TensorRef::<f32, M::Input>::new(x).expect("whole batch");
    rayon::scope(|_| {
        median_seconds(|| {
            model
                .train_step(x, y, &CrossEntropy::default(), &mut opt)
                .expect("finite loss");
        })
    })
}

/// The forward pass's FLOPs per sample of the workload's model, as the model counts them.
pub fn flops_per_sample(workload: &str) -> u64 {
    match workload {
        "mlp_small" | "infer_1_us" | "infer_1024" => MlpSmall::<f32>::FLOPS_PER_SAMPLE,
        "mlp_wide" => MlpWide::<f32>::FLOPS_PER_SAMPLE,
        "cnn" => Cnn::<f32>::FLOPS_PER_SAMPLE,
        "lstm" => LstmClassifier::<f32>::FLOPS_PER_SAMPLE,
        "transformer" => TransformerLm::<f32>::FLOPS_PER_SAMPLE,
        _ => ResNet20::<f32>::FLOPS_PER_SAMPLE,
    }
}

pub fn run(workload: &str) -> f64 {
    let mut data = Data::new(0);
    match workload {
        "mlp_small" => report(
            workload,
            128,
            train(MlpSmall::new(0), 128, Sgd::new(0.05), &mut data),
        ),
        "mlp_wide" => report(
            workload,
            128,
            train(MlpWide::new(0), 128, Sgd::new(0.05), &mut data),
        ),
        "cnn" => report(
            workload,
            64,
            train(Cnn::new(0), 64, Adam::new(1e-3), &mut data),
        ),
        "lstm" => report(
            workload,
            32,
            train(LstmClassifier::new(0), 32, Adam::new(1e-3), &mut data),
        ),
        "transformer" => {
            let (ids, next) = data.lm_windows(32);
            let x: Vec<f32> = ids.into_iter().map(|t| t as f32).collect();
            let y: Vec<usize> = next.into_iter().map(|t| t as usize).collect();
            let opt = AdamW::new(1e-3);
            report(workload, 32, train_on(TransformerLm::new(0), &x, &y, opt))
        }
        "resnet20" => report(
            workload,
            64,
            train(ResNet20::new(0), 64, Sgd::new(0.1).momentum(0.9), &mut data),
        ),
        _ => {
            let mut model = MlpSmall::<f32>::new(0);
            let batch = if workload == "infer_1_us" { 1 } else { 1024 };
            let x = data.uniform(batch * 784);
            let x = TensorRef::<f32, Shape1<784>>::new(&x).expect("whole batch");
            let seconds = median_seconds(|| {
                std::hint::black_box(model.infer(x)[0]);
            });
            report(workload, batch, seconds)
        }
    }
}
