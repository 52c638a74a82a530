//! The workloads in burn on its `flex` CPU backend (burn 0.22's fastest on CPU; the
//! `ndarray` backend is deprecated), with autodiff and burn's own optimisers.

use burn::module::{Module, Param};
use burn::nn::attention::{
    generate_autoregressive_mask, MhaInput, MultiHeadAttention, MultiHeadAttentionConfig,
};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Embedding, EmbeddingConfig, Gelu, LayerNorm, LayerNormConfig,
    Linear, LinearConfig, Lstm, LstmConfig, PaddingConfig2d, Relu,
};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, SgdConfig};
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

use crate::{LM_DIM as DIM, LM_FF as FF, LM_HEADS as HEADS, LM_STEPS as STEPS, LM_VOCAB as VOCAB};

/// A pre-norm transformer block with burn's multi-head attention (no dropout, as in
/// the other peers).
#[derive(Module, Debug)]
struct Block {
    ln1: LayerNorm,
    attn: MultiHeadAttention,
    ln2: LayerNorm,
    ff1: Linear,
    gelu: Gelu,
    ff2: Linear,
}

impl Block {
    fn new(device: &Device) -> Self {
        Block {
            ln1: LayerNormConfig::new(DIM).init(device),
            attn: MultiHeadAttentionConfig::new(DIM, HEADS)
                .with_dropout(0.0)
                .init(device),
            ln2: LayerNormConfig::new(DIM).init(device),
            ff1: LinearConfig::new(DIM, FF).init(device),
            gelu: Gelu::new(),
            ff2: LinearConfig::new(FF, DIM).init(device),
        }
    }

    fn forward(&self, x: Tensor<3>, mask: Tensor<3, Bool>) -> Tensor<3> {
        let input = MhaInput::self_attn(self.ln1.forward(x.clone())).mask_attn(mask);
        let x = x + self.attn.forward(input).context;
        let h = self
            .gelu
            .forward(self.ff1.forward(self.ln2.forward(x.clone())));
        x + self.ff2.forward(h)
    }
}

/// T6: token and learned position embeddings, two blocks, a final norm, the head.
#[derive(Module, Debug)]
struct TransformerLm {
    tok: Embedding,
    pos: Param<Tensor<2>>,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Linear,
}

impl TransformerLm {
    fn new(device: &Device) -> Self {
        let pos = Tensor::random(
            [STEPS, DIM],
            burn::tensor::Distribution::Normal(0.0, 0.02),
            device,
        );
        TransformerLm {
            tok: EmbeddingConfig::new(VOCAB, DIM).init(device),
            pos: Param::from_tensor(pos),
            blocks: (0..2).map(|_| Block::new(device)).collect(),
            ln_f: LayerNormConfig::new(DIM).init(device),
            head: LinearConfig::new(DIM, VOCAB).init(device),
        }
    }

    /// Token ids `[batch, STEPS]` to logits `[batch · STEPS, VOCAB]`.
    fn forward(&self, idx: Tensor<2, Int>) -> Tensor<2> {
        let [batch, steps] = idx.dims();
        let mask = generate_autoregressive_mask(batch, steps, &idx.device());
        let mut x = self.tok.forward(idx) + self.pos.val().unsqueeze_dim(0);
        for block in &self.blocks {
            x = block.forward(x, mask.clone());
        }
        self.head
            .forward(self.ln_f.forward(x))
            .reshape([batch * steps, VOCAB])
    }
}

/// A convolution without bias (3×3 with padding 1, or 1×1) and its batch norm.
#[derive(Module, Debug)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(cin: usize, cout: usize, kernel: usize, stride: usize, device: &Device) -> Self {
        let pad = kernel / 2;
        ConvBn {
            conv: Conv2dConfig::new([cin, cout], [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(cout).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x))
    }
}

/// A basic block; `shortcut` is the projection where the block changes the shape.
#[derive(Module, Debug)]
struct Basic {
    a: ConvBn,
    b: ConvBn,
    shortcut: Option<ConvBn>,
}

/// T7: ResNet-20 for `[3, 32, 32]` images (batch norm trains on the autodiff backend).
#[derive(Module, Debug)]
struct ResNet20 {
    stem: ConvBn,
    blocks: Vec<Basic>,
    pool: AdaptiveAvgPool2d,
    fc: Linear,
    relu: Relu,
}

impl ResNet20 {
    fn new(device: &Device) -> Self {
        let mut blocks = Vec::new();
        let mut cin = 16;
        for (i, cout) in [16, 32, 64].into_iter().enumerate() {
            for j in 0..3 {
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                blocks.push(Basic {
                    a: ConvBn::new(cin, cout, 3, stride, device),
                    b: ConvBn::new(cout, cout, 3, 1, device),
                    shortcut: (stride != 1 || cin != cout)
                        .then(|| ConvBn::new(cin, cout, 1, stride, device)),
                });
                cin = cout;
            }
        }
        ResNet20 {
            stem: ConvBn::new(3, 16, 3, 1, device),
            blocks,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(64, 10).init(device),
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.relu.forward(self.stem.forward(x));
        for block in &self.blocks {
            let h = block
                .b
                .forward(self.relu.forward(block.a.forward(x.clone())));
            let skip = match &block.shortcut {
                Some(projection) => projection.forward(x),
                None => x,
            };
            x = self.relu.forward(h + skip);
        }
        self.fc.forward(self.pool.forward(x).flatten(1, 3))
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
        "transformer" => {
            let model = TransformerLm::new(&train_device);
            let (x, y) = data.lm_windows(32);
            let x: Vec<i64> = x.into_iter().map(i64::from).collect();
            let y: Vec<i64> = y.into_iter().map(i64::from).collect();
            let x = Tensor::<2, Int>::from_data(TensorData::new(x, [32, STEPS]), &train_device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(y, [32 * STEPS]), &train_device);
            let adamw = AdamWConfig::new().with_weight_decay(0.01).init();
            let seconds = train!(model, adamw, 1e-3, x, y, &train_device);
            report(workload, 32, seconds)
        }
        "resnet20" => {
            let model = ResNet20::new(&train_device);
            let x = input(&mut data, [64, 3, 32, 32], &train_device);
            let y = labels(&mut data, 64, &train_device);
            let momentum = MomentumConfig::new().with_momentum(0.9).with_dampening(0.0);
            let sgd = SgdConfig::new().with_momentum(Some(momentum)).init();
            let seconds = train!(model, sgd, 0.1, x, y, &train_device);
            report(workload, 64, seconds)
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
