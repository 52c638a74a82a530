//! kiln against values computed by JAX and optax (float64), from
//! `tests/fixtures/reference.json`, which `scripts/reference/generate.py` writes: every
//! layer's forward and backward, every loss and its gradient, whole generated models,
//! and optimiser trajectories; and against PyTorch (`scripts/reference/torch_*.py`):
//! recurrent and attention layers, and graph models whose PyTorch state dicts load
//! unchanged.

use kiln::__private::layers::{self, Accum, Activation};
use kiln::loss::OutputLayout;
use kiln::prelude::*;
use serde_json::Value;

/// Relative tolerance in f64: what separates two correct implementations that
/// associate sums differently.
const TOLERANCE: f64 = 1e-12;

fn fixture() -> Value {
    let text = include_str!("fixtures/reference.json");
    serde_json::from_str(text).expect("fixture is valid JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn labels(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("label") as usize)
        .collect()
}

#[track_caller]
fn assert_close(what: &str, actual: &[f64], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let mut worst: f64 = 0.0;
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let error = (a - e).abs() / 1f64.max(e.abs());
        worst = worst.max(error);
        assert!(
            error <= TOLERANCE,
            "{what}[{i}]: kiln {a} vs reference {e} (error {error:e})"
        );
    }
    println!("{what}: worst relative error {worst:e}");
}

fn activation(name: &str) -> Activation {
    match name {
        "identity" => Activation::Identity,
        "relu" => Activation::Relu,
        "leaky_relu_0.1" => Activation::LeakyRelu(0.1),
        "leaky_relu_-0.2" => Activation::LeakyRelu(-0.2),
        "sigmoid" => Activation::Sigmoid,
        "tanh" => Activation::Tanh,
        "gelu" => Activation::Gelu,
        other => panic!("unknown activation {other}"),
    }
}

#[test]
fn dense_and_activations_match_jax() {
    const IN: usize = 5;
    const OUT: usize = 4;
    for case in fixture()["dense"].as_array().unwrap() {
        let name = case["activation"].as_str().unwrap();
        let act = activation(name);
        let rows = case["rows"].as_u64().unwrap() as usize;
        let (x, w, b) = (
            floats(&case["x"]),
            floats(&case["weight"]),
            floats(&case["bias"]),
        );
        let upstream = floats(&case["upstream"]);
        let mut gx = vec![0.0; rows * IN];
        let mut gw = vec![0.0; OUT * IN];
        let mut gb = vec![0.0; OUT];
        let mut y = vec![0.0; rows * OUT];
        if act.fusable() {
            // The fused path: bias and activation in the GEMM's epilogue.
            layers::dense_forward::<f64, IN, OUT>(&mut y, &x, &w, Some(&b), act, rows);
            let mut g = upstream.clone();
            layers::dense_backward::<f64, IN, OUT>(
                Some((&mut gx, Accum::Replace)),
                &mut gw,
                Some(&mut gb),
                &x,
                &w,
                &y,
                &mut g,
                act,
                rows,
            );
        } else {
            // Dense, then the activation as its own layer.
            let mut z = vec![0.0; rows * OUT];
            layers::dense_forward::<f64, IN, OUT>(
                &mut z,
                &x,
                &w,
                Some(&b),
                Activation::Identity,
                rows,
            );
            layers::activation_forward(act, &mut y, &z);
            let mut gz = vec![0.0; rows * OUT];
            layers::activation_backward(act, &mut gz, Accum::Replace, &z, &y, &upstream);
            layers::dense_backward::<f64, IN, OUT>(
                Some((&mut gx, Accum::Replace)),
                &mut gw,
                Some(&mut gb),
                &x,
                &w,
                &z,
                &mut gz,
                Activation::Identity,
                rows,
            );
        }
        assert_close(&format!("dense+{name} y"), &y, &floats(&case["y"]));
        assert_close(
            &format!("dense+{name} grad_x"),
            &gx,
            &floats(&case["grad_x"]),
        );
        assert_close(
            &format!("dense+{name} grad_weight"),
            &gw,
            &floats(&case["grad_weight"]),
        );
        assert_close(
            &format!("dense+{name} grad_bias"),
            &gb,
            &floats(&case["grad_bias"]),
        );
    }
}

#[test]
fn softmax_layers_match_jax() {
    for case in fixture()["softmax"].as_array().unwrap() {
        let kind = case["kind"].as_str().unwrap();
        let (x, upstream) = (floats(&case["x"]), floats(&case["upstream"]));
        let mut y = vec![0.0; x.len()];
        let mut gx = vec![0.0; x.len()];
        if kind == "softmax" {
            layers::softmax_forward::<f64, 5>(&mut y, &x);
            layers::softmax_backward::<f64, 5>(&mut gx, Accum::Replace, &y, &upstream);
        } else {
            layers::log_softmax_forward::<f64, 5>(&mut y, &x);
            layers::log_softmax_backward::<f64, 5>(&mut gx, Accum::Replace, &y, &upstream);
        }
        assert_close(&format!("{kind} y"), &y, &floats(&case["y"]));
        assert_close(&format!("{kind} grad_x"), &gx, &floats(&case["grad_x"]));
    }
}

fn check_loss<L: Loss<f64>>(
    what: &str,
    loss: &L,
    output: &[f64],
    target: &L::Target,
    case: &Value,
) {
    let layout = OutputLayout {
        batch: 3,
        width: case["width"].as_u64().unwrap() as usize,
    };
    let mut grad = vec![0.0; output.len()];
    let value = loss
        .evaluate(output, target, layout, Some(&mut grad))
        .unwrap();
    assert_close(
        &format!("{what} value"),
        &[value],
        &[case["value"].as_f64().unwrap()],
    );
    assert_close(&format!("{what} grad"), &grad, &floats(&case["grad"]));
}

#[test]
fn losses_match_jax() {
    for case in fixture()["losses"].as_array().unwrap() {
        let name = case["loss"].as_str().unwrap();
        let reduction = match case["reduction"].as_str().unwrap() {
            "mean" => Reduction::Mean,
            _ => Reduction::Sum,
        };
        let what = format!("{name} ({reduction:?})");
        let output = floats(&case["output"]);
        match name {
            "mse" => check_loss(
                &what,
                &Mse { reduction },
                &output,
                &floats(&case["target"])[..],
                case,
            ),
            "bce" => check_loss(
                &what,
                &BinaryCrossEntropy { reduction },
                &output,
                &floats(&case["target"])[..],
                case,
            ),
            "bce_logits" => check_loss(
                &what,
                &BceWithLogits { reduction },
                &output,
                &floats(&case["target"])[..],
                case,
            ),
            "cross_entropy" => check_loss(
                &what,
                &CrossEntropy { reduction },
                &output,
                &labels(&case["target"])[..],
                case,
            ),
            other => panic!("unknown loss {other}"),
        }
    }
}

kiln::model! {
    struct RefMlp { input: [5], fc1: Dense(7), Relu, fc2: Dense(4), Tanh, fc3: Dense(3) }
}
kiln::model! {
    struct RefResidual {
        input: [6],
        fc_in: Dense(6), Gelu,
        block: Residual { inner: Dense(6), Tanh },
        LogSoftmax,
        out: Dense(3),
    }
}
kiln::model! {
    struct RefCnn {
        input: [1, 8, 8],
        conv: Conv2d(3, kernel = 3, padding = 1), Relu,
        MaxPool2d(2),
        bn: BatchNorm2d,
        Flatten,
        fc: Dense(4),
    }
}
kiln::model! {
    struct RefSequence { input: [3, 4], seq: Dense(6), Sigmoid, Flatten, head: Dense(2) }
}

/// Loss, parameter gradients and input gradient of a generated model at the fixture's
/// parameters.
fn model_gradients<M: Model<f64>, L: Loss<f64>>(
    case: &Value,
    loss: &L,
    target: &L::Target,
) -> (f64, Vec<f64>, Vec<f64>) {
    let mut model = M::with_seed(0);
    model.set_params(&floats(&case["params"])).unwrap();
    let x = floats(&case["x"]);
    let x = TensorRef::<f64, M::Input>::new(&x).unwrap();
    let output = model.forward_train(x).to_vec();
    let mut grad_output = vec![0.0; output.len()];
    let layout = OutputLayout {
        batch: x.batch(),
        width: *M::SPEC.output.last().unwrap(),
    };
    let value = loss
        .evaluate(&output, target, layout, Some(&mut grad_output))
        .unwrap();
    model.backward(&grad_output).unwrap();
    let grads = model.grads().unwrap().as_slice().to_vec();
    // The same pass with the input's gradient as well.
    model.forward_train(x);
    let grad_x = model.backward_to_input(&grad_output).unwrap().to_vec();
    assert_eq!(model.grads().unwrap().as_slice(), grads, "{}", M::SPEC.name);
    (value, grads, grad_x)
}

#[test]
fn generated_models_match_jax() {
    for case in fixture()["models"].as_array().unwrap() {
        let name = case["model"].as_str().unwrap();
        let (value, grads, grad_x) = match name {
            "mlp" => model_gradients::<RefMlp<f64>, _>(
                case,
                &CrossEntropy::default(),
                &labels(&case["target"]),
            ),
            "residual" => model_gradients::<RefResidual<f64>, _>(
                case,
                &CrossEntropy::default(),
                &labels(&case["target"]),
            ),
            "cnn" => model_gradients::<RefCnn<f64>, _>(
                case,
                &CrossEntropy::default(),
                &labels(&case["target"]),
            ),
            "sequence" => model_gradients::<RefSequence<f64>, _>(
                case,
                &BceWithLogits::default(),
                &floats(&case["target"]),
            ),
            other => panic!("unknown model {other}"),
        };
        assert_close(
            &format!("{name} loss"),
            &[value],
            &[case["value"].as_f64().unwrap()],
        );
        assert_close(&format!("{name} grads"), &grads, &floats(&case["grads"]));
        assert_close(
            &format!("{name} input gradient"),
            &grad_x,
            &floats(&case["grad_x"]),
        );
    }
}

kiln::model! {
    struct RefInception {
        input: [2, 5, 5],
        mixed: Concat {
            b1: { Conv2d(2, kernel = 1), Relu },
            b3: { Conv2d(2, kernel = 1), Relu, Conv2d(3, kernel = 3, padding = 1) },
            pool: { MaxPool2d(3, stride = 1, padding = 1), Conv2d(2, kernel = 1) },
            skip: {},
        },
        GlobalAvgPool,
        out: Dense(3),
    }
}
kiln::model! {
    struct RefResNetBlock {
        input: [2, 6, 6],
        down: Add {
            main: {
                Conv2d(4, kernel = 3, stride = 2, padding = 1), BatchNorm2d, Relu,
                Conv2d(4, kernel = 3, padding = 1), BatchNorm2d,
            },
            shortcut: { Conv2d(4, kernel = 1, stride = 2), BatchNorm2d },
        },
        Relu,
        GlobalAvgPool,
        fc: Dense(3),
    }
}
kiln::model! {
    struct RefNested {
        input: [6],
        outer: Add {
            skip: {},
            deep: {
                cat: Concat { p: Dense(3), q: Mul { r: Dense(3), s: { Dense(3), Sigmoid } } },
                Tanh,
            },
        },
        head: Dense(3),
    }
}

/// An Inception block, a ResNet block with a projection shortcut and blocks nested
/// three deep: parameter names as the script's module tree has them, loss, parameter
/// and input gradients.
#[test]
fn branch_models_match_jax() {
    fn check<M: Model<f64>>(case: &Value) {
        let names: Vec<&str> = M::SPEC.params.iter().map(|p| p.name).collect();
        let expected: Vec<&str> = case["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert_eq!(names, expected);
        let (value, grads, grad_x) =
            model_gradients::<M, _>(case, &CrossEntropy::default(), &labels(&case["target"]));
        let name = M::SPEC.name;
        assert_close(
            &format!("{name} loss"),
            &[value],
            &[case["value"].as_f64().unwrap()],
        );
        assert_close(&format!("{name} grads"), &grads, &floats(&case["grads"]));
        assert_close(
            &format!("{name} input gradient"),
            &grad_x,
            &floats(&case["grad_x"]),
        );
    }
    let cases = fixture()["branch_models"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 3);
    for case in &cases {
        match case["model"].as_str().unwrap() {
            "inception" => check::<RefInception<f64>>(case),
            "resnet_block" => check::<RefResNetBlock<f64>>(case),
            "nested" => check::<RefNested<f64>>(case),
            other => panic!("unknown model {other}"),
        }
    }
}

#[test]
fn optimisers_follow_optax() {
    for case in fixture()["optimizers"].as_array().unwrap() {
        let name = case["optimizer"].as_str().unwrap();
        let mut opt: Box<dyn Optimizer<f64>> = match name {
            "sgd_momentum_nesterov" => Box::new(Sgd::new(0.1).momentum(0.9).nesterov(true)),
            "adam" => Box::new(Adam::new(0.01)),
            "adamw" => Box::new(AdamW::new(0.01).weight_decay(0.01)),
            "rmsprop_centered_momentum" => {
                Box::new(RmsProp::new(0.01).centered(true).momentum(0.5))
            }
            other => panic!("unknown optimiser {other}"),
        };
        let mut params = floats(&case["params"]);
        let grads = case["grads"].as_array().unwrap();
        let trajectory = case["trajectory"].as_array().unwrap();
        for (step, (g, expected)) in grads.iter().zip(trajectory).enumerate() {
            opt.step(&mut params, &floats(g)).unwrap();
            assert_close(&format!("{name} step {step}"), &params, &floats(expected));
        }
    }
}

fn pair(v: &Value) -> (usize, usize) {
    let a = v.as_array().unwrap();
    (
        a[0].as_u64().unwrap() as usize,
        a[1].as_u64().unwrap() as usize,
    )
}

fn geometry(
    case: &Value,
    in_channels: usize,
    out_channels: usize,
    dilation: (usize, usize),
) -> layers::Conv2dShape {
    layers::Conv2dShape {
        in_channels,
        in_size: pair(&case["in_size"]),
        out_channels,
        kernel: pair(&case["kernel"]),
        stride: pair(&case["stride"]),
        padding: pair(&case["padding"]),
        dilation,
        out_size: pair(&case["out_size"]),
    }
}

#[test]
fn convolutions_match_jax() {
    for (i, case) in fixture()["conv"].as_array().unwrap().iter().enumerate() {
        let batch = case["batch"].as_u64().unwrap() as usize;
        let cin = case["in_channels"].as_u64().unwrap() as usize;
        let cout = case["out_channels"].as_u64().unwrap() as usize;
        let s = geometry(case, cin, cout, pair(&case["dilation"]));
        let (x, w, b) = (
            floats(&case["x"]),
            floats(&case["weight"]),
            floats(&case["bias"]),
        );
        let mut y = vec![0.0; batch * s.output_len()];
        let mut cols = vec![0.0; s.cols_buffer_len(batch)];
        layers::conv2d_forward(
            &s,
            &mut y,
            &mut cols,
            &x,
            &w,
            Some(&b),
            Activation::Identity,
            batch,
        );
        assert_close(&format!("conv {i} y"), &y, &floats(&case["y"]));
        let mut gx = vec![0.0; x.len()];
        let mut gw = vec![0.0; w.len()];
        let mut gb = vec![0.0; b.len()];
        let mut partial = vec![0.0; s.partial_len()];
        let mut upstream = floats(&case["upstream"]);
        layers::conv2d_backward(
            &s,
            Some((&mut gx, Accum::Replace)),
            &mut gw,
            Some(&mut gb),
            &mut partial,
            &mut cols,
            &x,
            &w,
            &y,
            &mut upstream,
            Activation::Identity,
            batch,
        );
        assert_close(&format!("conv {i} grad_x"), &gx, &floats(&case["grad_x"]));
        assert_close(
            &format!("conv {i} grad_weight"),
            &gw,
            &floats(&case["grad_weight"]),
        );
        assert_close(
            &format!("conv {i} grad_bias"),
            &gb,
            &floats(&case["grad_bias"]),
        );
    }
}

#[test]
fn pools_match_jax() {
    for (i, case) in fixture()["pool"].as_array().unwrap().iter().enumerate() {
        let batch = case["batch"].as_u64().unwrap() as usize;
        let c = case["channels"].as_u64().unwrap() as usize;
        let s = geometry(case, c, c, (1, 1));
        let (x, upstream) = (floats(&case["x"]), floats(&case["upstream"]));
        let mut y = vec![0.0; batch * s.output_len()];
        let mut gx = vec![0.0; x.len()];
        let kind = case["kind"].as_str().unwrap();
        if kind == "max" {
            let mut argmax = vec![0.0; y.len()];
            layers::max_pool2d_forward(&s, &mut y, &mut argmax, &x, batch);
            layers::max_pool2d_backward(&s, &mut gx, Accum::Replace, &argmax, &upstream, batch);
        } else {
            layers::avg_pool2d_forward(&s, &mut y, &x, batch);
            layers::avg_pool2d_backward(&s, &mut gx, Accum::Replace, &upstream, batch);
        }
        assert_close(&format!("{kind} pool {i} y"), &y, &floats(&case["y"]));
        assert_close(
            &format!("{kind} pool {i} grad_x"),
            &gx,
            &floats(&case["grad_x"]),
        );
    }
}

#[test]
fn batch_norm_matches_jax_and_pytorchs_running_statistics() {
    for (i, case) in fixture()["batch_norm"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let batch = case["batch"].as_u64().unwrap() as usize;
        let s = layers::BatchNormShape {
            channels: case["channels"].as_u64().unwrap() as usize,
            inner: case["inner"].as_u64().unwrap() as usize,
            eps: case["eps"].as_f64().unwrap(),
            momentum: case["momentum"].as_f64().unwrap(),
        };
        let c = s.channels;
        let (x, gamma, beta) = (
            floats(&case["x"]),
            floats(&case["gamma"]),
            floats(&case["beta"]),
        );
        let mut y = vec![0.0; x.len()];
        let mut saved = vec![0.0; 2 * c];
        let mut running: Vec<f64> = std::iter::repeat_n(0.0, c)
            .chain(std::iter::repeat_n(1.0, c))
            .chain([0.0])
            .collect();
        layers::batch_norm_forward(
            &s,
            &mut y,
            &mut saved,
            &mut running,
            &x,
            &gamma,
            &beta,
            Activation::Identity,
            true,
            batch,
        );
        assert_close(&format!("batch norm {i} y"), &y, &floats(&case["y"]));
        assert_close(
            &format!("batch norm {i} running mean"),
            &running[..c],
            &floats(&case["running_mean"]),
        );
        assert_close(
            &format!("batch norm {i} running var"),
            &running[c..2 * c],
            &floats(&case["running_var"]),
        );
        let mut gx = vec![0.0; x.len()];
        let mut gg = vec![0.0; c];
        let mut gb = vec![0.0; c];
        layers::batch_norm_backward(
            &s,
            Some((&mut gx, Accum::Replace)),
            &mut gg,
            &mut gb,
            &saved,
            &x,
            &y,
            &gamma,
            &floats(&case["upstream"]),
            Activation::Identity,
            batch,
        );
        assert_close(
            &format!("batch norm {i} grad_x"),
            &gx,
            &floats(&case["grad_x"]),
        );
        assert_close(
            &format!("batch norm {i} grad_gamma"),
            &gg,
            &floats(&case["grad_gamma"]),
        );
        assert_close(
            &format!("batch norm {i} grad_beta"),
            &gb,
            &floats(&case["grad_beta"]),
        );
    }
}

/// Recurrent layers against PyTorch's nn.RNN, nn.LSTM and nn.GRU, up to 64 steps.
#[test]
fn recurrent_layers_match_pytorch() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/torch_recurrent.json")).expect("valid JSON");
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["cell"].as_str().unwrap();
        let get = |k: &str| case[k].as_u64().unwrap() as usize;
        let (batch, steps, features, hidden) =
            (get("batch"), get("steps"), get("features"), get("hidden"));
        let cell = match name {
            "rnn" => layers::Cell::Rnn,
            "lstm" => layers::Cell::Lstm,
            _ => layers::Cell::Gru,
        };
        let s = layers::RecurrentShape {
            cell,
            steps,
            features,
            hidden,
        };
        let w = s.width();
        let params = floats(&case["params"]);
        let (w_ih, rest) = params.split_at(w * features);
        let (w_hh, rest) = rest.split_at(w * hidden);
        let (b_ih, b_hh) = rest.split_at(w);
        let x = floats(&case["x"]);
        let mut y = vec![0.0; batch * steps * hidden];
        let mut aux = vec![0.0; batch * s.aux_len()];
        let mut scratch = vec![0.0; s.scratch_len()];
        layers::recurrent_forward(
            &s,
            &mut y,
            &mut aux,
            &mut scratch,
            &x,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            batch,
        );
        let what = format!("{name} over {steps} steps");
        assert_close(&format!("{what} y"), &y, &floats(&case["y"]));
        let mut grads = vec![0.0; params.len()];
        let (g_wi, rest) = grads.split_at_mut(w * features);
        let (g_wh, rest) = rest.split_at_mut(w * hidden);
        let (g_bi, g_bh) = rest.split_at_mut(w);
        let mut gx = vec![0.0; x.len()];
        let mut upstream = floats(&case["upstream"]);
        layers::recurrent_backward(
            &s,
            Some((&mut gx, Accum::Replace)),
            g_wi,
            g_wh,
            g_bi,
            g_bh,
            &mut aux,
            &mut scratch,
            &x,
            &y,
            w_ih,
            w_hh,
            &mut upstream,
            batch,
        );
        assert_close(&format!("{what} grad_x"), &gx, &floats(&case["grad_x"]));
        assert_close(&format!("{what} grads"), &grads, &floats(&case["grads"]));
    }
}

/// Self-attention (with and without a causal mask or key padding), cross-attention
/// (with and without key padding), layer norm and embedding against PyTorch's
/// nn.MultiheadAttention, nn.LayerNorm and nn.Embedding.
#[test]
fn attention_and_layer_norm_match_pytorch() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/torch_attention.json")).expect("valid JSON");
    for case in fixture["cases"].as_array().unwrap() {
        let get = |k: &str| case[k].as_u64().unwrap() as usize;
        if case["kind"] == "embedding" {
            let (dim, table) = (get("dim"), floats(&case["params"]));
            let ids: Vec<f64> = labels(&case["ids"]).into_iter().map(|i| i as f64).collect();
            let mut y = vec![0.0; ids.len() * dim];
            layers::embedding_forward(&mut y, &ids, &table, dim);
            assert_close("embedding y", &y, &floats(&case["y"]));
            let mut grad = vec![0.0; table.len()];
            layers::embedding_backward(&mut grad, &ids, &floats(&case["upstream"]), dim);
            assert_close("embedding grads", &grad, &floats(&case["grads"]));
            continue;
        }
        let (x, params, upstream) = (
            floats(&case["x"]),
            floats(&case["params"]),
            floats(&case["upstream"]),
        );
        let mut grads = vec![0.0; params.len()];
        let mut gx = vec![0.0; x.len()];
        let mut y = vec![0.0; x.len()];
        let what = if case["kind"] == "attention" {
            let causal = case["causal"].as_bool().unwrap();
            let s = layers::AttentionShape {
                steps: get("steps"),
                keys: get("keys"),
                dim: get("dim"),
                heads: get("heads"),
                causal,
            };
            let (batch, d) = (get("batch"), s.dim);
            let memory = case.get("memory").map(floats);
            let padding = case.get("padding").map(floats);
            let inputs = layers::AttentionInputs {
                query: &x,
                memory: memory.as_deref(),
                key_padding: padding.as_deref(),
            };
            let (wi, rest) = params.split_at(3 * d * d);
            let (bi, rest) = rest.split_at(3 * d);
            let (wo, bo) = rest.split_at(d * d);
            let mut aux = vec![0.0; batch * s.aux_len()];
            layers::attention_forward(&s, &mut y, &mut aux, inputs, wi, bi, wo, bo, batch);
            let (g_wi, rest) = grads.split_at_mut(3 * d * d);
            let (g_bi, rest) = rest.split_at_mut(3 * d);
            let (g_wo, g_bo) = rest.split_at_mut(d * d);
            let mut g_memory = vec![0.0; memory.as_ref().map_or(0, Vec::len)];
            let mut partial = vec![0.0; s.params_len()];
            let attention_grads = layers::AttentionGrads {
                input: Some((&mut gx, Accum::Replace)),
                memory: memory
                    .is_some()
                    .then_some((&mut g_memory[..], Accum::Replace)),
                in_weight: g_wi,
                in_bias: g_bi,
                out_weight: g_wo,
                out_bias: g_bo,
                partial: &mut partial,
            };
            layers::attention_backward(
                &s,
                attention_grads,
                &mut aux,
                inputs,
                wi,
                wo,
                &upstream,
                batch,
            );
            let what = format!(
                "attention (causal: {causal}, memory: {}, padding: {})",
                memory.is_some(),
                padding.is_some()
            );
            if memory.is_some() {
                assert_close(
                    &format!("{what} grad_memory"),
                    &g_memory,
                    &floats(&case["grad_memory"]),
                );
            }
            what
        } else {
            let width = get("width");
            let (gamma, beta) = params.split_at(width);
            let mut saved = vec![0.0; 2 * x.len() / width];
            layers::layer_norm_forward(&mut y, &mut saved, &x, gamma, beta, width, 1e-5);
            let (gg, gb) = grads.split_at_mut(width);
            layers::layer_norm_backward(
                Some((&mut gx, Accum::Replace)),
                gg,
                gb,
                &saved,
                &x,
                gamma,
                &upstream,
                width,
            );
            "layer norm".to_string()
        };
        assert_close(&format!("{what} y"), &y, &floats(&case["y"]));
        assert_close(&format!("{what} grad_x"), &gx, &floats(&case["grad_x"]));
        assert_close(&format!("{what} grads"), &grads, &floats(&case["grads"]));
    }
}

// The PyTorch twins of these models are in `scripts/reference/torch_graphs.py`.
kiln::model! {
    struct TorchCnn {
        input: [1, 8, 8],
        conv: Conv2d(3, kernel = 3, padding = 1), Relu, MaxPool2d(2),
        bn: BatchNorm2d, Flatten, fc: Dense(4),
    }
}
kiln::model! {
    struct TorchInception {
        input: [2, 5, 5],
        mixed: Concat {
            b1: { Conv2d(2, kernel = 1), Relu },
            b3: { Conv2d(2, kernel = 1), Relu, Conv2d(3, kernel = 3, padding = 1) },
            pool: { MaxPool2d(3, stride = 1, padding = 1), Conv2d(2, kernel = 1) },
            skip: {},
        },
        GlobalAvgPool, out: Dense(3),
    }
}
kiln::model! {
    struct TorchResNetBlock {
        input: [2, 6, 6],
        down: Add {
            main: {
                Conv2d(4, kernel = 3, stride = 2, padding = 1), BatchNorm2d, Relu,
                Conv2d(4, kernel = 3, padding = 1), BatchNorm2d,
            },
            shortcut: { Conv2d(4, kernel = 1, stride = 2), BatchNorm2d },
        },
        Relu, GlobalAvgPool, fc: Dense(3),
    }
}
kiln::model! {
    /// Two scales of a U-Net: the skip concatenated with the upsampled coarse path,
    /// upsampled both by a transposed convolution and bilinearly.
    struct TorchUNet {
        input: [1, 8, 8],
        enc: { Conv2d(4, kernel = 3, padding = 1), Relu },
        level: Concat {
            skip: {},
            down: {
                MaxPool2d(2), Conv2d(8, kernel = 3, padding = 1), Relu,
                up: Concat {
                    learnt: ConvTranspose2d(4, kernel = 3, stride = 2, padding = 1, output_padding = 1),
                    smooth: { Upsample(2, mode = bilinear), Conv2d(2, kernel = 1) },
                },
            },
        },
        dec: Conv2d(1, kernel = 3, padding = 1),
    }
}
kiln::model! {
    struct TorchConvTranspose {
        input: [3, 4, 5],
        up: ConvTranspose2d(2, kernel = 3, stride = 2, padding = 1, output_padding = 1), Tanh,
        up2: ConvTranspose2d(2, kernel = (2, 3), stride = (1, 2), padding = (0, 1),
                             dilation = (2, 1), output_padding = (0, 1), bias = false),
    }
}
kiln::model! {
    struct TorchUpsample {
        input: [2, 3, 4],
        Upsample((2, 3)), Upsample(2, mode = bilinear), Upsample((3, 2), mode = bilinear),
        mix: Conv2d(1, kernel = 1),
    }
}
kiln::model! {
    struct TorchNested {
        input: [6],
        outer: Add {
            skip: {},
            deep: { cat: Concat { p: Dense(3), q: Mul { r: Dense(3), s: { Dense(3), Sigmoid } } }, Tanh },
        },
        head: Dense(3),
    }
}
kiln::model! {
    struct TorchStages {
        input: [1, 6, 6],
        stem: Conv2d(3, kernel = 3, padding = 1), Relu,
        layer1: Repeat(2) {
            block: Add {
                main: { Conv2d(3, kernel = 3, padding = 1), BatchNorm2d, Relu, Conv2d(3, kernel = 3, padding = 1) },
                skip: {},
            },
            Relu,
        },
        GlobalAvgPool, head: Dense(3),
    }
}

kiln::model! {
    /// torchvision's basic block, defined once and used three times.
    block Basic(channels) {
        Residual {
            conv1: Conv2d(channels, kernel = 3, padding = 1, bias = false), bn1: BatchNorm2d, Relu,
            conv2: Conv2d(channels, kernel = 3, padding = 1, bias = false), bn2: BatchNorm2d,
        },
        Relu,
    }
    struct TorchReused {
        input: [2, 6, 6],
        layer1: { Basic(2), Basic(2) },
        widen: Conv2d(3, kernel = 1),
        layer2: { Basic(3) },
        GlobalAvgPool, fc: Dense(3),
    }
}

/// PyTorch's state dicts of graph models load unchanged, and the loaded models give
/// PyTorch's inference output, training output, parameter and input gradients and
/// running statistics: a CNN, an Inception block, a ResNet block with a projection
/// shortcut, a two-scale U-Net, transposed convolutions, upsampling, blocks nested
/// three deep, a repeated block and a defined block used three times.
/// Loads a PyTorch state dict into `model` and compares inference, training output,
/// parameter and input gradients and running statistics with PyTorch's, as recorded in
/// `case` by one of the scripts in `scripts/reference`.
fn check_torch_model<M: Model<f64>>(mut model: M, case: &Value) {
    let name = case["model"].as_str().unwrap();
    let file = format!(
        "{}/tests/fixtures/torch_{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    model.load(&file).unwrap();
    let x = floats(&case["x"]);
    let x = TensorRef::<f64, M::Input>::new(&x).unwrap();
    let y_eval = model.forward(x).as_slice().to_vec();
    assert_close(
        &format!("{name} inference"),
        &y_eval,
        &floats(&case["y_eval"]),
    );
    let y = model.forward_train(x).to_vec();
    assert_close(&format!("{name} training output"), &y, &floats(&case["y"]));
    let grad_x = model
        .backward_to_input(&floats(&case["upstream"]))
        .unwrap()
        .to_vec();
    assert_close(
        &format!("{name} input gradient"),
        &grad_x,
        &floats(&case["grad_x"]),
    );
    let grads = model.grads().unwrap();
    for (param, expected) in case["grads"].as_object().unwrap() {
        let got = grads
            .get(param)
            .unwrap_or_else(|| panic!("{name}: no {param}"));
        assert_close(&format!("{name} {param} gradient"), got, &floats(expected));
    }
    assert_eq!(
        case["grads"].as_object().unwrap().len(),
        M::SPEC.params.len()
    );
    let buffers = model.buffers();
    for (buffer, expected) in case["buffers_after"].as_object().unwrap() {
        let got = buffers
            .get(buffer)
            .unwrap_or_else(|| panic!("{name}: no {buffer}"));
        assert_close(
            &format!("{name} {buffer} after a step"),
            got,
            &floats(expected),
        );
    }
}

#[test]
fn graph_models_load_pytorch_state_dicts_and_match_pytorch() {
    let json: Value = serde_json::from_str(include_str!("fixtures/torch_graphs.json")).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        match case["model"].as_str().unwrap() {
            "cnn" => check_torch_model(TorchCnn::<f64>::new(0), case),
            "inception" => check_torch_model(TorchInception::<f64>::new(0), case),
            "resnet_block" => check_torch_model(TorchResNetBlock::<f64>::new(0), case),
            "unet" => check_torch_model(TorchUNet::<f64>::new(0), case),
            "conv_transpose" => check_torch_model(TorchConvTranspose::<f64>::new(0), case),
            "upsample" => check_torch_model(TorchUpsample::<f64>::new(0), case),
            "nested" => check_torch_model(TorchNested::<f64>::new(0), case),
            "stages" => check_torch_model(TorchStages::<f64>::new(0), case),
            "reused" => check_torch_model(TorchReused::<f64>::new(0), case),
            other => panic!("unknown model {other}"),
        }
    }
}

kiln::model! {
    struct TorchBiLstm { input: [6, 3], lstm: Lstm(4, bidirectional = true), head: Dense(2) }
}
kiln::model! {
    struct TorchBiGruRnn {
        input: [5, 4],
        gru: Gru(3, bidirectional = true),
        rnn: Rnn(2, bidirectional = true),
    }
}
kiln::model! {
    struct TorchConv1d {
        input: [4, 10],
        conv1: Conv1d(5, kernel = 3, stride = 2, padding = 1), Relu,
        conv2: Conv1d(3, kernel = 3, padding = 2, dilation = 2, bias = false), Tanh,
        Flatten,
        fc: Dense(2),
    }
}
kiln::model! {
    struct TorchSequenceConv {
        input: [8, 3],
        Transpose, conv: Conv1d(4, kernel = 3, padding = 1), Transpose,
        lstm: Lstm(3, bidirectional = true),
        LastStep,
        fc: Dense(2),
    }
}

/// PyTorch's state dicts of sequence models load unchanged and give PyTorch's output
/// and gradients: bidirectional LSTM, GRU and RNN (`_reverse` parameters), 1-d
/// convolutions with stride, padding, dilation and no bias, and a convolution over a
/// sequence's steps between two transposes.
#[test]
fn sequence_models_load_pytorch_state_dicts_and_match_pytorch() {
    let json: Value = serde_json::from_str(include_str!("fixtures/torch_sequences.json")).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        match case["model"].as_str().unwrap() {
            "bilstm" => check_torch_model(TorchBiLstm::<f64>::new(0), case),
            "bigru_rnn" => check_torch_model(TorchBiGruRnn::<f64>::new(0), case),
            "conv1d" => check_torch_model(TorchConv1d::<f64>::new(0), case),
            "sequence_conv" => check_torch_model(TorchSequenceConv::<f64>::new(0), case),
            other => panic!("unknown model {other}"),
        }
    }
}

kiln::model! {
    struct TorchTwoInputs {
        inputs: { image: [2, 6, 6], meta: [3] },
        trunk: image >> { Conv2d(3, kernel = 3), Relu, Flatten },
        joined: Concat(trunk, meta) >> { Dense(8), Tanh },
        outputs: { y: joined >> Dense(4) },
    }
}
kiln::model! {
    struct TorchTwoOutputs {
        inputs: { x: [5] },
        trunk: x >> { Dense(6), Tanh },
        outputs: { a: trunk >> Dense(3), b: trunk >> Dense(2) },
    }
}

kiln::model! {
    struct TorchEncoderDecoder {
        inputs: { source: [6, 8], padding: [6], target: [4, 8] },
        encoded: source >> TransformerEncoderLayer(
            heads = 2, ff = 16, dropout = 0.0, activation = gelu, norm_first = true,
            key_padding = padding,
        ),
        decoded: target >> TransformerDecoderLayer(
            heads = 2, ff = 16, memory = encoded, dropout = 0.0, memory_padding = padding,
        ),
        outputs: { y: decoded >> { Flatten, Dense(3) } },
    }
}

kiln::model! {
    struct TorchTriage {
        inputs: { title: [6], body: [8], tags: [5] },
        t: title >> { Embedding(20, 4), Lstm(5), LastStep },
        b: body >> { Embedding(20, 4), Gru(3), LastStep },
        joined: Concat(t, b, tags),
        outputs: { priority: joined >> Dense(1), department: joined >> Dense(4) },
    }
}

/// Three inputs and two outputs of different kinds, as Keras's functional-API example
/// has them: a binary cross-entropy on one and a weighted cross-entropy against class
/// probabilities on the other, both on value targets in one dataset, give PyTorch's
/// outputs, loss and parameter gradients.
#[test]
fn outputs_of_different_kinds_match_pytorch() {
    let json: Value = serde_json::from_str(include_str!("fixtures/torch_multi_io.json")).unwrap();
    let case = &json["cases"][3];
    assert_eq!(case["model"], "triage");
    let mut model = TorchTriage::<f64>::new(0);
    let file = format!(
        "{}/tests/fixtures/torch_triage.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    model.load(&file).unwrap();
    let x = floats(&case["x"]);
    let targets = floats(&case["targets"]);
    let loss = TorchTriageOutputs {
        priority: BceWithLogits::default(),
        department: CategoricalCrossEntropy::default()
            .weight(case["weight_department"].as_f64().unwrap()),
    };
    let x = TensorRef::<f64, Shape1<19>>::new(&x).unwrap();
    let value = model.value_and_grad(x, &targets[..], &loss).unwrap();
    assert_close(
        "triage: outputs",
        model.last_output(),
        &floats(&case["outputs"]),
    );
    assert_close("triage: loss", &[value], &[case["loss"].as_f64().unwrap()]);
    let grads = model.grads().unwrap();
    for (param, expected) in case["grads"].as_object().unwrap() {
        let got = grads.get(param).unwrap_or_else(|| panic!("no {param}"));
        assert_close(&format!("triage: {param} gradient"), got, &floats(expected));
    }
    assert_eq!(
        case["grads"].as_object().unwrap().len(),
        TorchTriage::<f64>::SPEC.params.len()
    );
}

/// Models with several inputs and outputs against PyTorch: a two-input model (image
/// and features, packed as kiln takes them) loads its state dict and gives PyTorch's
/// output and gradients; a two-output model's weighted loss (cross-entropy plus 0.3
/// times cross-entropy) gives PyTorch's loss, parameter gradients and input gradient;
/// an encoder–decoder of PyTorch's own transformer layers (a padded source, a causal
/// target attending to it) loads its state dict unchanged and gives PyTorch's output
/// and every gradient.
#[test]
fn multi_input_and_output_models_match_pytorch() {
    let json: Value = serde_json::from_str(include_str!("fixtures/torch_multi_io.json")).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    check_torch_model(TorchTwoInputs::<f64>::new(0), &cases[0]);
    assert_eq!(cases[2]["model"], "encoder_decoder");
    check_torch_model(TorchEncoderDecoder::<f64>::new(0), &cases[2]);
    let case = &cases[1];
    assert_eq!(case["model"], "two_outputs");
    let mut model = TorchTwoOutputs::<f64>::new(0);
    let file = format!(
        "{}/tests/fixtures/torch_two_outputs.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    model.load(&file).unwrap();
    let x = floats(&case["x"]);
    let targets = labels(&case["targets"]);
    let weight = case["weight_b"].as_f64().unwrap();
    let loss = TorchTwoOutputsOutputs {
        a: CrossEntropy::default(),
        b: CrossEntropy::default().weight(weight),
    };
    let x = TensorRef::<f64, Shape1<5>>::new(&x).unwrap();
    let (value, grad_x) = model
        .value_and_grad_to_input(x, &targets[..], &loss)
        .unwrap();
    let grad_x = grad_x.to_vec();
    assert_close(
        "two outputs: outputs",
        model.last_output(),
        &floats(&case["outputs"]),
    );
    assert_close(
        "two outputs: loss",
        &[value],
        &[case["loss"].as_f64().unwrap()],
    );
    assert_close(
        "two outputs: input gradient",
        &grad_x,
        &floats(&case["grad_x"]),
    );
    let grads = model.grads().unwrap();
    for (param, expected) in case["grads"].as_object().unwrap() {
        let got = grads.get(param).unwrap_or_else(|| panic!("no {param}"));
        assert_close(
            &format!("two outputs: {param} gradient"),
            got,
            &floats(expected),
        );
    }
    assert_eq!(case["grads"].as_object().unwrap().len(), 6);
}
