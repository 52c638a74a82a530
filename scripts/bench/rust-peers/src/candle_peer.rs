//! The workloads in candle (CPU), with `candle_nn`'s layers and optimisers.

use candle_core::{DType, Device, Module, ModuleT, Result, Tensor, Var};
use candle_nn::rnn::{LSTMConfig, LSTM, RNN};
use candle_nn::{
    BatchNorm, Conv2d, Conv2dConfig, Embedding, LayerNorm, Linear, Optimizer, VarBuilder, VarMap,
};

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

use crate::{LM_DIM as DIM, LM_FF as FF, LM_HEADS as HEADS, LM_STEPS as STEPS, LM_VOCAB as VOCAB};

/// A pre-norm transformer block; the attention's query, key and value come from one
/// `DIM → 3·DIM` projection, as in PyTorch's `nn.MultiheadAttention`.
struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    out: Linear,
    ln2: LayerNorm,
    ff1: Linear,
    ff2: Linear,
}

impl Block {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Block {
            ln1: candle_nn::layer_norm(DIM, 1e-5, vb.pp("ln1"))?,
            qkv: candle_nn::linear(DIM, 3 * DIM, vb.pp("qkv"))?,
            out: candle_nn::linear(DIM, DIM, vb.pp("out"))?,
            ln2: candle_nn::layer_norm(DIM, 1e-5, vb.pp("ln2"))?,
            ff1: candle_nn::linear(DIM, FF, vb.pp("ff1"))?,
            ff2: candle_nn::linear(FF, DIM, vb.pp("ff2"))?,
        })
    }

    /// `mask`: `[STEPS, STEPS]`, 0 on and below the diagonal and −∞ above it.
    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let d = DIM / HEADS;
        let qkv = self
            .qkv
            .forward(&self.ln1.forward(x)?)?
            .reshape((b, t, 3, HEADS, d))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?.broadcast_add(mask)?;
        let attention = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
        let attention = attention.transpose(1, 2)?.reshape((b, t, DIM))?;
        let x = (x + self.out.forward(&attention)?)?;
        let h = self.ff1.forward(&self.ln2.forward(&x)?)?.gelu_erf()?;
        x + self.ff2.forward(&h)?
    }
}

/// T6: token and learned position embeddings, two blocks, a final norm, the head.
struct TransformerLm {
    tok: Embedding,
    pos: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Linear,
    mask: Tensor,
}

impl TransformerLm {
    fn new(vb: VarBuilder) -> Result<Self> {
        let init = candle_nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let mask: Vec<f32> = (0..STEPS * STEPS)
            .map(|i| {
                if i % STEPS > i / STEPS {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        Ok(TransformerLm {
            tok: candle_nn::embedding(VOCAB, DIM, vb.pp("tok"))?,
            pos: vb.get_with_hints((STEPS, DIM), "pos", init)?,
            blocks: (0..2)
                .map(|i| Block::new(vb.pp(format!("block{i}"))))
                .collect::<Result<_>>()?,
            ln_f: candle_nn::layer_norm(DIM, 1e-5, vb.pp("ln_f"))?,
            head: candle_nn::linear(DIM, VOCAB, vb.pp("head"))?,
            mask: Tensor::from_vec(mask, (STEPS, STEPS), vb.device())?,
        })
    }
}

impl Module for TransformerLm {
    /// Token ids `[batch, STEPS]` to logits `[batch · STEPS, VOCAB]`.
    fn forward(&self, idx: &Tensor) -> Result<Tensor> {
        let mut x = self.tok.forward(idx)?.broadcast_add(&self.pos)?;
        for block in &self.blocks {
            x = block.forward(&x, &self.mask)?;
        }
        self.head
            .forward(&self.ln_f.forward(&x)?)?
            .reshape(((), VOCAB))
    }
}

/// A convolution without bias (3×3 with padding 1, or 1×1) and its batch norm.
struct ConvBn(Conv2d, BatchNorm);

impl ConvBn {
    fn new(cin: usize, cout: usize, kernel: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: kernel / 2,
            stride,
            ..Default::default()
        };
        Ok(ConvBn(
            candle_nn::conv2d_no_bias(cin, cout, kernel, cfg, vb.pp("conv"))?,
            candle_nn::batch_norm(cout, 1e-5, vb.pp("bn"))?,
        ))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.1.forward_t(&self.0.forward(x)?, true)
    }
}

/// A basic block; `shortcut` is the projection where the block changes the shape.
struct Basic {
    a: ConvBn,
    b: ConvBn,
    shortcut: Option<ConvBn>,
}

/// T7: ResNet-20 for `[3, 32, 32]` images, batch norm in training mode.
struct ResNet20 {
    stem: ConvBn,
    blocks: Vec<Basic>,
    fc: Linear,
}

impl ResNet20 {
    fn new(vb: VarBuilder) -> Result<Self> {
        let mut blocks = Vec::new();
        let mut cin = 16;
        for (i, cout) in [16, 32, 64].into_iter().enumerate() {
            for j in 0..3 {
                let vb = vb.pp(format!("layer{i}.{j}"));
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                blocks.push(Basic {
                    a: ConvBn::new(cin, cout, 3, stride, vb.pp("a"))?,
                    b: ConvBn::new(cout, cout, 3, 1, vb.pp("b"))?,
                    shortcut: if stride == 1 && cin == cout {
                        None
                    } else {
                        Some(ConvBn::new(cin, cout, 1, stride, vb.pp("shortcut"))?)
                    },
                });
                cin = cout;
            }
        }
        Ok(ResNet20 {
            stem: ConvBn::new(3, 16, 3, 1, vb.pp("stem"))?,
            blocks,
            fc: candle_nn::linear(64, 10, vb.pp("fc"))?,
        })
    }
}

impl Module for ResNet20 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.stem.forward(x)?.relu()?;
        for block in &self.blocks {
            let h = block.b.forward(&block.a.forward(&x)?.relu()?)?;
            let skip = match &block.shortcut {
                Some(projection) => projection.forward(&x)?,
                None => x,
            };
            x = (h + skip)?.relu()?;
        }
        self.fc.forward(&x.mean((2, 3))?)
    }
}

/// SGD with momentum as PyTorch defines it (`v ← μ·v + g`, `w ← w − lr·v`, no
/// dampening): `candle_nn::SGD` has no momentum.
struct MomentumSgd {
    vars: Vec<(Var, Option<Var>)>,
    lr: f64,
    momentum: f64,
}

impl Optimizer for MomentumSgd {
    type Config = (f64, f64);

    fn new(vars: Vec<Var>, (lr, momentum): (f64, f64)) -> Result<Self> {
        let vars = vars
            .into_iter()
            .filter(|var| var.dtype().is_float())
            .map(|var| (var, None))
            .collect();
        Ok(MomentumSgd { vars, lr, momentum })
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        for (var, velocity) in &mut self.vars {
            if let Some(grad) = grads.get(var) {
                // Velocities are `Var`s updated in place, as candle's AdamW keeps its
                // moments: a plain tensor would keep every step's graph alive.
                match velocity {
                    Some(v) => v.set(&((v.as_tensor() * self.momentum)? + grad)?)?,
                    None => *velocity = Some(Var::from_tensor(&grad.detach())?),
                }
                let v = velocity.as_ref().expect("set above");
                var.set(&var.sub(&(v.as_tensor() * self.lr)?)?)?;
            }
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
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
        "transformer" => {
            let model = TransformerLm::new(vb)?;
            let (x, y) = data.lm_windows(32);
            let x = Tensor::from_vec(x, (32, STEPS), &Device::Cpu)?;
            let y = Tensor::from_vec(y, 32 * STEPS, &Device::Cpu)?;
            report(workload, 32, train(&model, &mut adam(&varmap)?, &x, &y))
        }
        "resnet20" => {
            let model = ResNet20::new(vb)?;
            let (x, y) = (tensor(&mut data, &[64, 3, 32, 32]), labels(&mut data, 64));
            let mut opt = MomentumSgd::new(varmap.all_vars(), (0.1, 0.9))?;
            report(workload, 64, train(&model, &mut opt, &x, &y))
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
