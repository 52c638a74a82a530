//! The workloads in burn on its `flex` CPU backend (burn 0.22's fastest on CPU; the
//! `ndarray` backend is deprecated), with autodiff and burn's own optimisers.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, Lstm, LstmConfig, Relu};
use burn::optim::{AdamConfig, GradientsParams, SgdConfig};
use burn::prelude::*;

use crate::{median_seconds, report, Data};

pub const VERSION: &str = "burn 0.22 (flex)";

#[derive(Module, Debug)]
struct Mlp {
    layers: Vec<Linear>,
    relu: Relu,
}

impl Mlp {
    fn new(sizes: &[usize], device: &Device) -> Self {
        let layers = sizes
            .windows(2)
            .map(|w| LinearConfig::new(w[0], w[1]).init(device))
            .collect();
        Mlp {
            layers,
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h);
            if i < last {
                h = self.relu.forward(h);
            }
        }
        h
    }
}

#[derive(Module, Debug)]
struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
    relu: Relu,
}

impl Cnn {
    fn new(device: &Device) -> Self {
        Cnn {
            conv1: Conv2dConfig::new([1, 32], [3, 3]).init(device),
            conv2: Conv2dConfig::new([32, 64], [3, 3]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(1600, 128).init(device),
            fc2: LinearConfig::new(128, 10).init(device),
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let h = self.pool.forward(self.relu.forward(self.conv1.forward(x)));
        let h = self.pool.forward(self.relu.forward(self.conv2.forward(h)));
        let h: Tensor<2> = h.flatten(1, 3);
        self.fc2.forward(self.relu.forward(self.fc1.forward(h)))
    }
}

#[derive(Module, Debug)]
struct LstmClassifier {
    lstm: Lstm,
    fc: Linear,
}

impl LstmClassifier {
    fn new(device: &Device) -> Self {
        LstmClassifier {
            lstm: LstmConfig::new(64, 128, true).init(device),
            fc: LinearConfig::new(128, 10).init(device),
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        let (_, state) = self.lstm.forward(x, None);
        self.fc.forward(state.hidden)
    }
}

fn labels(data: &mut Data, n: usize, device: &Device) -> Tensor<1, Int> {
    let ys: Vec<i64> = data.labels(n).into_iter().map(i64::from).collect();
    Tensor::from_data(TensorData::new(ys, [n]), device)
}

fn input<const D: usize>(data: &mut Data, shape: [usize; D], device: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(data.uniform(n), shape), device)
}

/// Times one optimiser step of `forward` on (x, y): forward, loss, backward, update.
macro_rules! train {
    ($model:ident, $optim:expr, $lr:expr, $x:expr, $y:expr, $device:expr) => {{
        let loss_fn = CrossEntropyLossConfig::new().init($device);
        let mut optim = $optim;
        let mut slot = Some($model);
        median_seconds(|| {
            let model = slot.take().expect("model");
            let loss = loss_fn
                .forward(model.forward($x.clone()), $y.clone())
                .mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            slot = Some(optim.step($lr, model, grads));
            $device.sync().expect("sync");
        })
    }};
}

pub fn run(workload: &str) -> f64 {
    let device = Device::flex();
    let train_device = device.clone().autodiff();
    let mut data = Data::new(0);
    match workload {
        "mlp_small" | "mlp_wide" => {
            let sizes: &[usize] = if workload == "mlp_small" {
                &[784, 128, 10]
            } else {
                &[784, 1024, 1024, 10]
            };
            let model = Mlp::new(sizes, &train_device);
            let x = input(&mut data, [128, 784], &train_device);
            let y = labels(&mut data, 128, &train_device);
            let seconds = train!(model, SgdConfig::new().init(), 0.05, x, y, &train_device);
            report(workload, 128, seconds)
        }
        "cnn" => {
            let model = Cnn::new(&train_device);
            let x = input(&mut data, [64, 1, 28, 28], &train_device);
            let y = labels(&mut data, 64, &train_device);
            let seconds = train!(model, AdamConfig::new().init(), 1e-3, x, y, &train_device);
            report(workload, 64, seconds)
        }
        "lstm" => {
            let model = LstmClassifier::new(&train_device);
            let x = input(&mut data, [32, 32, 64], &train_device);
            let y = labels(&mut data, 32, &train_device);
            let seconds = train!(model, AdamConfig::new().init(), 1e-3, x, y, &train_device);
            report(workload, 32, seconds)
        }
        _ => {
            let model = Mlp::new(&[784, 128, 10], &device);
            let batch = if workload == "infer_1_us" { 1 } else { 1024 };
            let x = input(&mut data, [batch, 784], &device);
            let seconds = median_seconds(|| {
                std::hint::black_box(model.forward(x.clone()));
            });
            report(workload, batch, seconds)
        }
    }
}
