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

fn train<M: Model<f32> + Send>(
    mut model: M,
    batch: usize,
    mut opt: impl Optimizer<f32> + Send,
    data: &mut Data,
) -> f64 {
    let x = data.uniform(batch * <M::Input as Shape>::SIZE);
    let y: Vec<usize> = data.labels(batch).into_iter().map(|l| l as usize).collect();
    let x = TensorRef::<f32, M::Input>::new(&x).expect("whole batch");
    rayon::scope(|_| {
        median_seconds(|| {
            model
                .train_step(x, &y, &CrossEntropy::default(), &mut opt)
                .expect("finite loss");
        })
    })
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
