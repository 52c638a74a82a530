//! The workloads in candle (CPU), with `candle_nn`'s layers and optimisers.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::rnn::{LSTMConfig, LSTM, RNN};
use candle_nn::{Conv2d, Linear, Optimizer, VarBuilder, VarMap};

use crate::{median_seconds, report, Data};

pub const VERSION: &str = "candle 0.11";

struct Mlp(Vec<Linear>);

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, layer) in self.0.iter().enumerate() {
            h = layer.forward(&h)?;
            if i + 1 < self.0.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }
}

fn mlp(sizes: &[usize], vb: &VarBuilder) -> Result<Mlp> {
    let layers = sizes
        .windows(2)
        .enumerate()
        .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("fc{i}"))))
        .collect::<Result<_>>()?;
    Ok(Mlp(layers))
}

struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

impl Module for Cnn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(x)?.relu()?.max_pool2d(2)?;
        let h = self.conv2.forward(&h)?.relu()?.max_pool2d(2)?;
        let h = h.flatten_from(1)?;
        self.fc2.forward(&self.fc1.forward(&h)?.relu()?)
    }
}

struct LstmClassifier {
    lstm: LSTM,
    fc: Linear,
}

impl Module for LstmClassifier {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let states = self.lstm.seq(x)?;
        let last = states.last().expect("32 steps").h();
        self.fc.forward(last)
    }
}

fn train<M: Module, O: Optimizer>(model: &M, opt: &mut O, x: &Tensor, y: &Tensor) -> f64 {
    median_seconds(|| {
        let logits = model.forward(x).expect("forward");
        let loss = candle_nn::loss::cross_entropy(&logits, y).expect("loss");
        opt.backward_step(&loss).expect("backward");
    })
}

fn tensor(data: &mut Data, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(data.uniform(n), shape, &Device::Cpu).expect("tensor")
}

fn labels(data: &mut Data, n: usize) -> Tensor {
    Tensor::from_vec(data.labels(n), n, &Device::Cpu).expect("labels")
}

pub fn run(workload: &str) -> f64 {
    run_inner(workload).expect("candle workload")
}

fn run_inner(workload: &str) -> Result<f64> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut data = Data::new(0);
    let sgd = |varmap: &VarMap| candle_nn::SGD::new(varmap.all_vars(), 0.05);
    let adam = |varmap: &VarMap| candle_nn::AdamW::new_lr(varmap.all_vars(), 1e-3);
    Ok(match workload {
        "mlp_small" | "mlp_wide" => {
            let sizes: &[usize] = if workload == "mlp_small" {
                &[784, 128, 10]
            } else {
                &[784, 1024, 1024, 10]
            };
            let model = mlp(sizes, &vb)?;
            let (x, y) = (tensor(&mut data, &[128, 784]), labels(&mut data, 128));
            report(workload, 128, train(&model, &mut sgd(&varmap)?, &x, &y))
        }
        "cnn" => {
            let cfg = Default::default();
            let model = Cnn {
                conv1: candle_nn::conv2d(1, 32, 3, cfg, vb.pp("conv1"))?,
                conv2: candle_nn::conv2d(32, 64, 3, cfg, vb.pp("conv2"))?,
                fc1: candle_nn::linear(1600, 128, vb.pp("fc1"))?,
                fc2: candle_nn::linear(128, 10, vb.pp("fc2"))?,
            };
            let (x, y) = (tensor(&mut data, &[64, 1, 28, 28]), labels(&mut data, 64));
            report(workload, 64, train(&model, &mut adam(&varmap)?, &x, &y))
        }
        "lstm" => {
            let model = LstmClassifier {
                lstm: candle_nn::rnn::lstm(64, 128, LSTMConfig::default(), vb.pp("lstm"))?,
                fc: candle_nn::linear(128, 10, vb.pp("fc"))?,
            };
            let (x, y) = (tensor(&mut data, &[32, 32, 64]), labels(&mut data, 32));
            report(workload, 32, train(&model, &mut adam(&varmap)?, &x, &y))
        }
        _ => {
            let model = mlp(&[784, 128, 10], &vb)?;
            let batch = if workload == "infer_1_us" { 1 } else { 1024 };
            let x = tensor(&mut data, &[batch, 784]);
            let seconds = median_seconds(|| {
                std::hint::black_box(model.forward(&x).expect("forward"));
            });
            report(workload, batch, seconds)
        }
    })
}
