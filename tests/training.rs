//! Generated models learn what they should, deterministically, and bad run-time input
//! is an error that leaves the model as it was.

use kiln::prelude::*;

kiln::model! {
    /// y = w x + b.
    struct Linear { input: [1], out: Dense(1) }
}
kiln::model! {
    /// Two features in, one logit out.
    pub struct Logistic { input: [2], out: Dense(1) }
}
kiln::model! {
    struct Xor { input: [2], hidden: Dense(8), Tanh, out: Dense(1) }
}
kiln::model! {
    struct Mlp {
        input: [784],
        fc1: Dense(128), Relu,
        Dropout(0.2),
        fc2: Dense(10),
    }
}

#[test]
fn linear_regression_recovers_the_line() {
    let xs: Vec<f32> = (0..64).map(|i| i as f32 / 32.0 - 1.0).collect();
    let ys: Vec<f32> = xs.iter().map(|x| 3.0 * x - 2.0).collect();
    let x = TensorRef::<f32, Shape1<1>>::new(&xs).unwrap();
    let mut net = Linear::<f32>::new(0);
    let mut opt = Sgd::new(0.1);
    for _ in 0..1000 {
        net.train_step(x, &ys[..], &Mse::default(), &mut opt)
            .unwrap();
    }
    let w = net.params().get("out.weight").unwrap()[0];
    let b = net.params().get("out.bias").unwrap()[0];
    assert!((w - 3.0).abs() < 1e-3, "weight {w}");
    assert!((b + 2.0).abs() < 1e-3, "bias {b}");
}

#[test]
fn logistic_regression_separates_separable_data() {
    // Two clusters on either side of x0 + x1 = 0, with a margin.
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for i in 0..100 {
        let t = i as f32 / 100.0;
        let (a, b) = ((t * 7.0).sin(), (t * 13.0).cos());
        let label = i % 2;
        let shift = if label == 1 { 1.0 } else { -1.0 };
        xs.extend([a * 0.5 + shift, b * 0.5 + shift]);
        ys.push(label as f32);
    }
    let x = TensorRef::<f32, Shape1<2>>::new(&xs).unwrap();
    let mut net = Logistic::<f32>::new(3);
    let mut opt = Adam::new(0.05);
    for _ in 0..300 {
        net.train_step(x, &ys[..], &BceWithLogits::default(), &mut opt)
            .unwrap();
    }
    let logits = net.forward(x);
    for (logit, y) in logits.as_slice().iter().zip(&ys) {
        assert_eq!(*logit > 0.0, *y == 1.0);
    }
}

#[test]
fn xor_is_learned() {
    let xs = [0.0_f32, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
    let ys = [0.0_f32, 1.0, 1.0, 0.0];
    let x = TensorRef::<f32, Shape1<2>>::new(&xs).unwrap();
    let mut net = Xor::<f32>::new(7);
    let mut opt = Adam::new(0.05);
    let mut loss = 0.0;
    for _ in 0..500 {
        loss = net
            .train_step(x, &ys[..], &BceWithLogits::default(), &mut opt)
            .unwrap();
    }
    assert!(loss < 0.05, "loss {loss}");
    let out = net.forward(x);
    for (logit, y) in out.as_slice().iter().zip(ys) {
        assert_eq!(*logit > 0.0, y == 1.0, "{logit} for {y}");
    }
}

fn synthetic_batch(batch: usize) -> (Vec<f32>, Vec<usize>) {
    let x = (0..batch * 784)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let y = (0..batch).map(|i| (i * 3) % 10).collect();
    (x, y)
}

fn train_mlp(seed: u64, steps: usize, batch: usize) -> Vec<f32> {
    let (x, y) = synthetic_batch(batch);
    let x = TensorRef::<f32, Shape1<784>>::new(&x).unwrap();
    let mut net = Mlp::<f32>::new(seed);
    let mut opt = Adam::new(1e-3);
    for _ in 0..steps {
        net.train_step(x, &y[..], &CrossEntropy::default(), &mut opt)
            .unwrap();
    }
    net.params().as_slice().to_vec()
}

/// The MLP's weights after `steps` training steps with `optimizer`.
fn train_mlp_with<O: Optimizer<f32>>(mut optimizer: O, steps: usize) -> Vec<f32> {
    let (x, y) = synthetic_batch(64);
    let x = TensorRef::<f32, Shape1<784>>::new(&x).unwrap();
    let mut net = Mlp::<f32>::new(3);
    for _ in 0..steps {
        net.train_step(x, &y[..], &CrossEntropy::default(), &mut optimizer)
            .unwrap();
    }
    net.params().as_slice().to_vec()
}

/// A boxed optimiser steps as the one inside, bit for bit: plain SGD keeps its update
/// inside the backward pass (the fused path), Adam its stored-gradient path.
#[test]
fn a_boxed_optimiser_trains_as_the_one_inside() {
    let boxed: Box<dyn Optimizer<f32>> = Box::new(Sgd::new(0.05));
    assert_eq!(train_mlp_with(boxed, 4), train_mlp_with(Sgd::new(0.05), 4));
    let boxed: Box<dyn Optimizer<f32>> = Box::new(Adam::new(1e-3));
    assert_eq!(train_mlp_with(boxed, 4), train_mlp_with(Adam::new(1e-3), 4));
    // The steps move the weights: the equalities are not of untouched models.
    let untouched = Mlp::<f32>::new(3).params().as_slice().to_vec();
    assert_ne!(train_mlp_with(Sgd::new(0.05), 4), untouched);
}

#[test]
fn same_seed_gives_bit_identical_weights() {
    // Batch 256 takes the multi-threaded kernels; dropout draws from the seed too.
    let a = train_mlp(11, 5, 256);
    let b = train_mlp(11, 5, 256);
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    let c = train_mlp(12, 5, 256);
    assert_ne!(a, c);
    assert_eq!(
        Mlp::<f32>::new(5).params().as_slice(),
        Mlp::<f32>::new(5).params().as_slice()
    );
}

#[test]
fn initialisation_follows_pytorch_bounds() {
    let net = Mlp::<f64>::new(0);
    let bound1 = 1.0 / 784f64.sqrt();
    let bound2 = 1.0 / 128f64.sqrt();
    for (name, bound) in [
        ("fc1.weight", bound1),
        ("fc1.bias", bound1),
        ("fc2.weight", bound2),
        ("fc2.bias", bound2),
    ] {
        let values = net.params().get(name).unwrap();
        assert!(values.iter().all(|v| v.abs() <= bound), "{name}");
        let max = values.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        assert!(max > 0.9 * bound, "{name} should fill its range");
    }
}

#[test]
fn dropout_is_active_in_training_only() {
    let (x, _) = synthetic_batch(4);
    let x = TensorRef::<f32, Shape1<784>>::new(&x).unwrap();
    let mut net = Mlp::<f32>::new(1);
    assert_eq!(net.forward(x), net.forward(x), "inference is deterministic");
    let a = net.forward_train(x).to_vec();
    let b = net.forward_train(x).to_vec();
    assert_ne!(a, b, "training draws a new mask each pass");
}

#[test]
fn bad_batches_and_targets_are_errors() {
    assert_eq!(
        TensorRef::<f32, Shape1<784>>::new(&[0.0; 785]).unwrap_err(),
        Error::BatchLength {
            len: 785,
            sample_size: 784
        }
    );
    assert_eq!(
        TensorRef::<f32, Shape1<784>>::new(&[]).unwrap_err(),
        Error::EmptyBatch
    );

    let (x, mut y) = synthetic_batch(8);
    let x = TensorRef::<f32, Shape1<784>>::new(&x).unwrap();
    let mut net = Mlp::<f32>::new(1);
    let before = net.params().as_slice().to_vec();
    let mut opt = Sgd::new(0.1);
    y[5] = 10;
    assert_eq!(
        net.train_step(x, &y[..], &CrossEntropy::default(), &mut opt),
        Err(Error::LabelOutOfRange {
            label: 10,
            index: 5,
            classes: 10
        })
    );
    assert_eq!(
        net.train_step(x, &y[..7], &CrossEntropy::default(), &mut opt),
        Err(Error::TargetLength {
            expected: 8,
            actual: 7
        })
    );
    assert_eq!(net.params().as_slice(), &before[..]);
    assert_eq!(net.steps(), 0);

    // A NaN or infinite input value is refused before anything runs: a NaN would
    // pass the ReLU as 0 and still write NaN into fc1.weight.
    y[5] = 3;
    let (mut bad, _) = synthetic_batch(8);
    for (at, value) in [
        (3 * 784 + 17, f32::NAN),
        (100, f32::INFINITY),
        (6271, f32::NEG_INFINITY),
    ] {
        let saved = bad[at];
        bad[at] = value;
        let x = TensorRef::<f32, Shape1<784>>::new(&bad).unwrap();
        let error = net
            .train_step(x, &y[..], &CrossEntropy::default(), &mut opt)
            .unwrap_err();
        assert!(
            matches!(error, Error::NonFiniteInput { index, .. } if index == at),
            "{error}"
        );
        assert!(net
            .value_and_grad(x, &y[..], &CrossEntropy::default())
            .is_err());
        assert!(net
            .evaluate_loss(x, &y[..], &CrossEntropy::default())
            .is_err());
        // Inference: `try_forward` refuses the batch; `forward` is the unchecked path.
        assert!(
            matches!(net.try_forward(x), Err(Error::NonFiniteInput { index, .. }) if index == at)
        );
        assert!(
            matches!(net.try_infer(x), Err(Error::NonFiniteInput { index, .. }) if index == at)
        );
        bad[at] = saved;
    }
    assert_eq!(net.params().as_slice(), &before[..]);
    assert_eq!(net.steps(), 0);
    let x = TensorRef::<f32, Shape1<784>>::new(&bad).unwrap();
    assert_eq!(
        net.try_forward(x).unwrap().as_slice(),
        net.forward(x).as_slice()
    );
    let served = net.try_infer(x).unwrap().to_vec();
    assert_eq!(served, net.forward(x).as_slice());
}

#[test]
fn a_non_finite_loss_is_reported_with_its_step_and_changes_nothing() {
    let xs = [1.0_f32, 2.0];
    let x = TensorRef::<f32, Shape1<2>>::new(&xs).unwrap();
    let mut net = Logistic::<f32>::new(0);
    let mut opt = Sgd::new(0.1);
    net.train_step(x, &[1.0][..], &Mse::default(), &mut opt)
        .unwrap();
    let before = net.params().as_slice().to_vec();
    let err = net
        .train_step(x, &[f32::NAN][..], &Mse::default(), &mut opt)
        .unwrap_err();
    assert!(matches!(err, Error::NonFiniteLoss { step: 1, .. }), "{err}");
    let poisoned = [f32::INFINITY, 0.0];
    let err = net
        .train_step(
            TensorRef::new(&poisoned).unwrap(),
            &[1.0][..],
            &Mse::default(),
            &mut opt,
        )
        .unwrap_err();
    // An infinite input is refused before the forward pass.
    assert!(
        matches!(err, Error::NonFiniteInput { index: 0, .. }),
        "{err}"
    );
    assert_eq!(net.params().as_slice(), &before[..]);
}

kiln::model! {
    struct Deep { input: [1], h: Dense(1), out: Dense(1) }
}

#[test]
fn a_hidden_gradient_that_overflows_is_an_error_on_both_guarded_paths() {
    // h = 1e-30 x, y = 1e38 h: the forward pass and the loss are finite (y = 1e8), but
    // the gradient reaching h, 2y · 1e38, overflows. The dense layers note it as not
    // finite in the backward pass, so the guard forms and checks the gradients exactly.
    let x = [1.0_f32];
    let x = TensorRef::<f32, Shape1<1>>::new(&x).unwrap();
    let target = [0.0_f32];
    let loss = Mse::default();
    for optimizer in ["sgd", "adam"] {
        let mut net = Deep::<f32>::new(0);
        let spec = Deep::<f32>::SPEC;
        for (name, value) in [
            ("h.weight", 1e-30),
            ("h.bias", 0.0),
            ("out.weight", 1e38),
            ("out.bias", 0.0),
        ] {
            let at = spec.param(name).unwrap().offset;
            net.params_mut()[at] = value;
        }
        let before = net.params().as_slice().to_vec();
        let err = match optimizer {
            "sgd" => net.train_step(x, &target[..], &loss, &mut Sgd::new(0.1)),
            _ => net.train_step(x, &target[..], &loss, &mut Adam::new(0.1)),
        }
        .unwrap_err();
        assert!(
            matches!(&err, Error::NonFiniteParameterGradient { tensor, .. } if tensor.starts_with("h.")),
            "{optimizer}: {err}"
        );
        assert_eq!(net.params().as_slice(), &before[..], "{optimizer}");
    }
}

kiln::model! {
    struct Chain { input: [6], a: Dense(16), Tanh, b: Dense(8), Relu, c: Dense(3), Sigmoid, out: Dense(4) }
}
kiln::model! {
    struct NotChain { input: [6], a: Dense(16), Relu, Dropout(0.1), out: Dense(4) }
}

#[test]
fn a_dense_chain_keeps_its_update_inside_the_backward_pass_with_the_guard_on() {
    assert!(Chain::<f32>::SPEC.dense_chain && Deep::<f32>::SPEC.dense_chain);
    assert!(!NotChain::<f32>::SPEC.dense_chain && !Normed::<f32>::SPEC.dense_chain);
    // Guarded, a chain's gradients are bounded before the backward pass and the
    // weights updated inside it: the same bits as an unguarded step, step after step.
    let x: Vec<f64> = (0..5 * 6)
        .map(|i| ((i * 7) % 11) as f64 / 5.0 - 1.0)
        .collect();
    let x = TensorRef::<f64, Shape1<6>>::new(&x).unwrap();
    let target: Vec<usize> = (0..5).map(|i| i % 4).collect();
    let loss = CrossEntropy::default();
    let (mut on, mut off) = (Chain::<f64>::new(3), Chain::<f64>::new(3));
    off.set_nonfinite_guard(false);
    let (mut sgd_on, mut sgd_off) = (Sgd::new(0.3), Sgd::new(0.3));
    for _ in 0..20 {
        let a = on.train_step(x, &target[..], &loss, &mut sgd_on).unwrap();
        let b = off.train_step(x, &target[..], &loss, &mut sgd_off).unwrap();
        assert_eq!(a.to_bits(), b.to_bits());
    }
    assert_eq!(on.params().as_slice(), off.params().as_slice());
    // A weight written between steps is measured again, not covered by the bound kept
    // from the last step. `Deep` as in the test above: after good steps, 1e-30 and
    // 1e38 make the gradient reaching `h` overflow while the loss stays finite.
    let one = [1.0_f32];
    let one = TensorRef::<f32, Shape1<1>>::new(&one).unwrap();
    let mut net = Deep::<f32>::new(0);
    let mut sgd = Sgd::new(0.1);
    for _ in 0..3 {
        net.train_step(one, &[0.5_f32][..], &Mse::default(), &mut sgd)
            .unwrap();
    }
    for (name, value) in [("h.weight", 1e-30), ("h.bias", 0.0), ("out.weight", 1e38)] {
        let at = Deep::<f32>::SPEC.param(name).unwrap().offset;
        net.params_mut()[at] = value;
    }
    let before = net.params().as_slice().to_vec();
    let err = net
        .train_step(one, &[0.0_f32][..], &Mse::default(), &mut sgd)
        .unwrap_err();
    assert!(
        matches!(&err, Error::NonFiniteParameterGradient { tensor, .. } if tensor.starts_with("h.")),
        "{err}"
    );
    assert_eq!(net.params().as_slice(), &before[..]);
}

kiln::model! {
    struct Normed { input: [2], bn: BatchNorm1d, out: Dense(1) }
}

#[test]
fn running_statistics_that_overflow_are_an_error_and_change_nothing() {
    // Feature 0 is ±2e19: its square (4e38) overflows f32, so the batch variance and
    // the running variance become infinite, while the normalised values (x · 1/√∞ = 0)
    // and so the loss stay finite.
    let x = [2e19_f32, 1.0, -2e19, -1.0];
    let x = TensorRef::<f32, Shape1<2>>::new(&x).unwrap();
    let target = [0.5_f32, -0.5];
    let loss = Mse::default();
    let mut net = Normed::<f32>::new(0);
    let params = net.params().as_slice().to_vec();
    let buffers = net.buffers().as_slice().to_vec();
    let err = net
        .train_step(x, &target[..], &loss, &mut Sgd::new(0.1))
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::NonFiniteBuffer { tensor, index: 0, step: 0, value } if tensor == "bn.running_var" && value.is_infinite()
        ),
        "{err}"
    );
    assert_eq!(net.params().as_slice(), &params[..]);
    assert_eq!(net.buffers().as_slice(), &buffers[..]);
    assert_eq!(net.steps(), 0);
    // A step that fails after its forward pass for another reason (a target of the
    // wrong length) puts the running statistics back too.
    let fine = [1.0_f32, 2.0, 3.0, 5.0];
    let fine = TensorRef::<f32, Shape1<2>>::new(&fine).unwrap();
    net.train_step(fine, &[0.5_f32][..], &loss, &mut Sgd::new(0.1))
        .unwrap_err();
    assert_eq!(net.buffers().as_slice(), &buffers[..]);
    // A good step moves them.
    net.train_step(fine, &target[..], &loss, &mut Sgd::new(0.1))
        .unwrap();
    assert_ne!(net.buffers().as_slice(), &buffers[..]);
    // With the guard off, the infinity goes through: the guard is what stops it.
    let mut open = Normed::<f32>::new(0);
    open.set_nonfinite_guard(false);
    open.train_step(x, &target[..], &loss, &mut Sgd::new(0.1))
        .unwrap();
    assert!(open.buffers().get("bn.running_var").unwrap()[0].is_infinite());
}

/// A model and a one-sample input for it where the forward pass and the MSE loss
/// against 0 are finite (`(wx)² = 2.25e38`) but the weight's gradient
/// `2(wx)x = 4.5e38 / |w|` overflows f32.
fn overflowing() -> (Linear<f32>, [f32; 1]) {
    let net = Linear::<f32>::new(0);
    let w = net.params().get("out.weight").unwrap()[0];
    let b = net.params().get("out.bias").unwrap()[0];
    (net, [(1.5e19 - b) / w])
}

#[test]
fn a_gradient_that_overflows_is_an_error_and_changes_nothing() {
    let target = [0.0_f32; 1];
    let loss = Mse::default();
    for optimizer in ["sgd", "adam"] {
        let (mut net, x) = overflowing();
        let x = TensorRef::<f32, Shape1<1>>::new(&x).unwrap();
        let before = net.params().as_slice().to_vec();
        let mut sgd = Sgd::new(0.1);
        let mut adam = Adam::new(0.1);
        let err = match optimizer {
            "sgd" => net.train_step(x, &target[..], &loss, &mut sgd),
            _ => net.train_step(x, &target[..], &loss, &mut adam),
        }
        .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::NonFiniteParameterGradient { tensor, step: 0, .. } if tensor == "out.weight"
            ),
            "{optimizer}: {err}"
        );
        assert_eq!(net.params().as_slice(), &before[..], "{optimizer}");
        assert_eq!(net.steps(), 0);
        // Nor did the optimiser step: Adam's next step is the one of a fresh Adam.
        let ok = [0.5_f32; 1];
        let ok = TensorRef::<f32, Shape1<1>>::new(&ok).unwrap();
        if optimizer == "adam" {
            let (mut fresh, _) = overflowing();
            net.train_step(ok, &target[..], &loss, &mut adam).unwrap();
            fresh
                .train_step(ok, &target[..], &loss, &mut Adam::new(0.1))
                .unwrap();
            assert_eq!(net.params().as_slice(), fresh.params().as_slice());
        }
    }
    // The same through fit.
    let (mut net, x) = overflowing();
    let data =
        kiln::data::Dataset::<f32, Shape1<1>, f32>::new(x.to_vec(), target.to_vec(), None).unwrap();
    let before = net.params().as_slice().to_vec();
    let err = net
        .fit(
            &data,
            None,
            &loss,
            &mut Sgd::new(0.1),
            &FitConfig::new(1, 1).progress(Progress::Silent),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::NonFiniteParameterGradient { .. }),
        "{err}"
    );
    assert_eq!(net.params().as_slice(), &before[..]);
    // Large but finite: the guard's bound (2^100 for f32) is passed, so the gradient is
    // formed and checked exactly, and the step is the one stored gradients give.
    struct Stored(Sgd<f32>);
    impl Optimizer<f32> for Stored {
        fn step(&mut self, params: &mut [f32], grads: &[f32]) -> kiln::Result<()> {
            self.0.step(params, grads)
        }
        fn learning_rate(&self) -> f64 {
            Optimizer::<f32>::learning_rate(&self.0)
        }
        fn set_learning_rate(&mut self, lr: f64) {
            Optimizer::<f32>::set_learning_rate(&mut self.0, lr);
        }
    }
    let big = [1e16_f32];
    let big = TensorRef::<f32, Shape1<1>>::new(&big).unwrap();
    let (mut guarded, _) = overflowing();
    let (mut stored, _) = overflowing();
    guarded
        .train_step(big, &target[..], &loss, &mut Sgd::new(1e-33))
        .unwrap();
    stored
        .train_step(big, &target[..], &loss, &mut Stored(Sgd::new(1e-33)))
        .unwrap();
    assert_eq!(guarded.params().as_slice(), stored.params().as_slice());
    assert_ne!(guarded.params().as_slice(), &before[..]);
    // With the guard off (for speed), the overflow reaches the weight: what the guard
    // prevents.
    let (mut net, x) = overflowing();
    net.set_nonfinite_guard(false);
    let x = TensorRef::<f32, Shape1<1>>::new(&x).unwrap();
    net.train_step(x, &target[..], &loss, &mut Sgd::new(1.0))
        .unwrap();
    assert!(net.params().as_slice().iter().any(|v| !v.is_finite()));
}

#[test]
fn regularization_is_added_to_loss_and_gradient() {
    let xs = [0.5_f64, -1.0];
    let x = TensorRef::<f64, Shape1<2>>::new(&xs).unwrap();
    let mut net = Logistic::<f64>::new(4);
    net.set_params(&[0.3, -0.2, 0.1]).unwrap();
    let plain = net.evaluate_loss(x, &[1.0][..], &Mse::default()).unwrap();
    net.set_regularization(Regularization { l1: 0.01, l2: 0.1 });
    // A learning rate of zero leaves the weights, so the loss is comparable.
    let reported = net
        .train_step(x, &[1.0][..], &Mse::default(), &mut Sgd::new(0.0))
        .unwrap();
    let penalty = 0.01 * (0.3 + 0.2) + 0.1 * (0.09 + 0.04);
    assert!(
        (reported - plain - penalty).abs() < 1e-12,
        "{reported} vs {plain} + {penalty}"
    );
    // The bias is not regularised.
    let err = 1.0 - (0.3 * 0.5 + 0.2 + 0.1);
    let grad_bias = -2.0 * err;
    assert!((net.grads().unwrap().get("out.bias").unwrap()[0] - grad_bias).abs() < 1e-12);
    let grad_w0 = -2.0 * err * 0.5 + 0.01 + 2.0 * 0.1 * 0.3;
    assert!((net.grads().unwrap().get("out.weight").unwrap()[0] - grad_w0).abs() < 1e-12);
}

#[test]
fn a_custom_loop_step_equals_train_step() {
    // forward_train, the loss's gradient, backward, apply_gradients: the same update
    // and, with the returned penalty, the same loss as train_step, with Adam and an
    // L1 + L2 penalty, over three steps.
    let xs = [0.5_f64, -1.0, 2.0, 0.25];
    let x = TensorRef::<f64, Shape1<2>>::new(&xs).unwrap();
    let y = [1.0, 0.0];
    let loss = BceWithLogits::default();
    let penalty = Regularization { l1: 0.01, l2: 0.1 };
    let mut reference = Logistic::<f64>::new(4);
    reference.set_regularization(penalty);
    let mut custom = Logistic::<f64>::new(4);
    custom.set_regularization(penalty);
    let mut one_call = Logistic::<f64>::new(4);
    one_call.set_regularization(penalty);
    let (mut opt_a, mut opt_b, mut opt_c) = (Adam::new(0.05), Adam::new(0.05), Adam::new(0.05));
    let layout = kiln::loss::OutputLayout { batch: 2, width: 1 };
    for _ in 0..3 {
        let expected = reference.train_step(x, &y[..], &loss, &mut opt_a).unwrap();
        // value_and_grad does the forward pass, the loss and the backward pass at once.
        let value = one_call.value_and_grad(x, &y[..], &loss).unwrap();
        let added = one_call.apply_gradients(&mut opt_c).unwrap();
        assert!((value + added - expected).abs() < 1e-12);
        assert_eq!(one_call.params().as_slice(), reference.params().as_slice());
        let output = custom.forward_train(x).to_vec();
        let mut grad = vec![0.0; 2];
        let value = loss.evaluate(&output, &y, layout, Some(&mut grad)).unwrap();
        custom.backward(&grad).unwrap();
        let added = custom.apply_gradients(&mut opt_b).unwrap();
        assert!(
            (value + added - expected).abs() < 1e-12,
            "{value} + {added} vs {expected}"
        );
        assert_eq!(custom.params().as_slice(), reference.params().as_slice());
    }
    assert_eq!(custom.steps(), 3);
    // With the input's gradient: the same as forward_train, backward_to_input.
    let (value, grad_x) = one_call.value_and_grad_to_input(x, &y[..], &loss).unwrap();
    let grad_x = grad_x.to_vec();
    let output = custom.forward_train(x).to_vec();
    let mut grad = vec![0.0; 2];
    assert_eq!(
        loss.evaluate(&output, &y, layout, Some(&mut grad)).unwrap(),
        value
    );
    assert_eq!(custom.backward_to_input(&grad).unwrap(), &grad_x[..]);
    assert_eq!(
        custom.grads().unwrap().as_slice(),
        one_call.grads().unwrap().as_slice()
    );
    // A bad target is an error that computes no gradient.
    assert!(one_call.value_and_grad(x, &[1.0][..], &loss).is_err());
    custom.apply_gradients(&mut opt_b).unwrap();
    // The same gradients are not applied twice, and a failed update changes nothing.
    assert!(custom.apply_gradients(&mut opt_b).is_err());
    let before = custom.params().as_slice().to_vec();
    custom.forward_train(x);
    custom.backward(&[1.0, 1.0]).unwrap();
    assert!(custom.apply_gradients(&mut Adam::new(-1.0)).is_err());
    assert_eq!(custom.params().as_slice(), &before[..]);
    assert_eq!(custom.steps(), 4);
}

#[test]
fn a_second_backward_needs_a_new_forward_pass() {
    // A convolution's backward pass overwrites the columns its forward pass saved: a
    // second backward would compute wrong gradients, so it is an error.
    kiln::model! { struct SmallCnn { input: [1, 5, 5], conv: Conv2d(2, kernel = 3), Flatten, fc: Dense(2) } }
    let mut net = SmallCnn::<f64>::new(1);
    let x: Vec<f64> = (0..50).map(|i| (i as f64 * 0.37).sin()).collect();
    let x = TensorRef::<f64, Shape3<1, 5, 5>>::new(&x).unwrap();
    net.forward_train(x);
    net.backward(&[1.0, -1.0, 0.5, 0.25]).unwrap();
    let first = net.grads().unwrap().as_slice().to_vec();
    let error = net.backward(&[1.0, -1.0, 0.5, 0.25]).unwrap_err();
    assert!(error.to_string().contains("forward_train"), "{error}");
    assert!(net.backward_to_input(&[1.0, -1.0, 0.5, 0.25]).is_err());
    assert_eq!(net.grads().unwrap().as_slice(), &first[..]);
    net.forward_train(x);
    net.backward(&[1.0, -1.0, 0.5, 0.25]).unwrap();
    assert_eq!(net.grads().unwrap().as_slice(), &first[..]);
}

#[test]
fn every_optimiser_trains_the_mlp() {
    let (x, y) = synthetic_batch(32);
    let x = TensorRef::<f32, Shape1<784>>::new(&x).unwrap();
    fn run(
        opt: &mut impl Optimizer<f32>,
        x: TensorRef<'_, f32, Shape1<784>>,
        y: &[usize],
    ) -> (f32, f32) {
        let mut net = Mlp::<f32>::new(3);
        let first = net.evaluate_loss(x, y, &CrossEntropy::default()).unwrap();
        for _ in 0..60 {
            net.train_step(x, y, &CrossEntropy::default(), opt).unwrap();
        }
        (
            first,
            net.evaluate_loss(x, y, &CrossEntropy::default()).unwrap(),
        )
    }
    let results = [
        run(&mut Sgd::new(0.1).momentum(0.9), x, &y),
        run(&mut Adam::new(1e-3), x, &y),
        run(&mut AdamW::new(1e-3), x, &y),
        run(&mut RmsProp::new(1e-3), x, &y),
    ];
    for (first, last) in results {
        println!("{first} -> {last}");
        assert!(last < first * 0.5, "{first} -> {last}");
    }
}

#[test]
fn schedules_drive_the_learning_rate() {
    let mut opt = Sgd::<f32>::new(0.1);
    let schedule = CosineAnnealing {
        t_max: 4,
        eta_min: 0.0,
    };
    let rates: Vec<f64> = (0..=4)
        .map(|epoch| {
            opt.set_learning_rate(schedule.lr_at(0.1, epoch));
            opt.learning_rate()
        })
        .collect();
    assert!((rates[2] - 0.05).abs() < 1e-12 && rates[4].abs() < 1e-12);
    assert!(
        (StepLr {
            step_size: 2,
            gamma: 0.5
        }
        .lr_at(0.1, 3)
            - 0.05)
            .abs()
            < 1e-12
    );
}

#[test]
fn summary_indents_branches_under_their_block() {
    kiln::model! {
        struct Branchy {
            input: [2, 6, 6],
            mixed: Concat { a: { Conv2d(2, kernel = 1), Relu }, skip: {} },
            GlobalAvgPool,
            fc: Dense(3),
        }
    }
    let text = Branchy::<f32>::summary().to_string();
    println!("{text}");
    let rows: Vec<&str> = text.lines().collect();
    let at = |name: &str| {
        rows.iter()
            .position(|row| row.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no row {name}:\n{text}"))
    };
    // The block's row, then its branches one step in, their layers two steps in.
    let (mixed, a, conv, skip) = (
        at("mixed "),
        at("mixed.a "),
        at("mixed.a.0 "),
        at("mixed.skip "),
    );
    assert!(mixed < a && a < conv && conv < skip && skip < at("fc "));
    assert!(rows[mixed].starts_with("mixed "));
    assert!(rows[a].starts_with("  mixed.a "));
    assert!(rows[conv].starts_with("    mixed.a.0 "));
    assert!(rows[mixed].contains("Concat") && rows[mixed].contains("[4, 6, 6]"));
    assert!(rows[conv].contains("Conv2d(2, kernel = 1)") && rows[conv].ends_with(" 6"));
}

#[test]
fn summary_reads_like_keras() {
    let text = Mlp::<f32>::summary().to_string();
    println!("{text}");
    assert!(text.starts_with("Model: Mlp"));
    for row in [
        "fc1",
        "Dense(128)",
        "[128]",
        "100,480",
        "dropout_0",
        "Dropout(0.2)",
        "fc2",
        "1,290",
    ] {
        assert!(text.contains(row), "summary lacks {row}:\n{text}");
    }
    assert!(text.contains("Total params: 101,770"));
    assert_eq!(Mlp::<f32>::PARAM_COUNT, 784 * 128 + 128 + 128 * 10 + 10);
    assert_eq!(
        Mlp::<f32>::FLOPS_PER_SAMPLE,
        <Mlp as Model<f32>>::SPEC.flops_per_sample
    );
}

#[test]
fn one_models_output_feeds_another() {
    kiln::model! { struct Encoder { input: [8], Dense(4), Tanh } }
    kiln::model! { struct Head { input: [4], Dense(2) } }
    let xs = [0.1_f32; 16];
    let encoder = Encoder::<f32>::new(0);
    let head = Head::<f32>::new(1);
    let features = encoder.forward(TensorRef::new(&xs).unwrap());
    let out = head.forward(&features);
    assert_eq!(out.batch(), 2);
    assert_eq!(out.sample(0).len(), 2);
}

#[test]
fn token_ids_out_of_range_are_errors() {
    kiln::model! { struct Tokens { input: [3], tok: Embedding(vocab = 5, dim = 4), LastStep, Dense(2) } }
    let mut net = Tokens::<f32>::new(0);
    let before = net.params().as_slice().to_vec();
    let mut opt = Sgd::new(0.1);
    for (ids, index, id) in [
        ([0.0, 5.0, 1.0], 1, 5.0),
        ([0.0, 1.0, -1.0], 2, -1.0),
        ([0.5, 1.0, 2.0], 0, 0.5),
    ] {
        let x = TensorRef::<f32, Shape1<3>>::new(&ids).unwrap();
        assert_eq!(
            net.train_step(x, &[0usize][..], &CrossEntropy::default(), &mut opt),
            Err(Error::TokenOutOfRange {
                id,
                index,
                vocab: 5
            })
        );
        assert!(net
            .evaluate_loss(x, &[0usize][..], &CrossEntropy::default())
            .is_err());
    }
    assert_eq!(net.params().as_slice(), &before[..]);
    let ok = [0.0_f32, 4.0, 2.0];
    net.train_step(
        TensorRef::new(&ok).unwrap(),
        &[1usize][..],
        &CrossEntropy::default(),
        &mut opt,
    )
    .unwrap();
}

#[test]
fn settings_that_overflow_the_element_type_are_errors_that_change_nothing() {
    let (x, y) = synthetic_batch(4);
    let x = TensorRef::<f32, Shape1<784>>::new(&x).unwrap();
    let mut net = Mlp::<f32>::new(3);
    let before = net.params().as_slice().to_vec();
    // 1e39 is a finite f64 but infinity as an f32.
    let mut step = |opt: &mut dyn FnMut(&mut Mlp<f32>) -> kiln::Result<f32>| {
        let err = opt(&mut net).unwrap_err();
        assert!(
            matches!(err, kiln::Error::InvalidHyperParameter { .. }),
            "{err}"
        );
    };
    let loss = CrossEntropy::default();
    step(&mut |m| m.train_step(x, &y[..], &loss, &mut Sgd::new(1e39)));
    step(&mut |m| {
        m.train_step(
            x,
            &y[..],
            &loss,
            &mut Sgd::new(0.1).momentum(0.9).dampening(f64::NAN),
        )
    });
    step(&mut |m| m.train_step(x, &y[..], &loss, &mut Sgd::new(0.1).weight_decay(1e39)));
    step(&mut |m| m.train_step(x, &y[..], &loss, &mut Adam::new(1e39)));
    step(&mut |m| m.train_step(x, &y[..], &loss, &mut RmsProp::new(1e39)));
    assert_eq!(net.params().as_slice(), &before[..]);
    assert_eq!(net.steps(), 0);
    // The same rate is a valid (if useless) f64 setting.
    assert!(Optimizer::<f64>::step(&mut Sgd::new(1e39), &mut [0.0][..], &[0.0][..]).is_ok());
}
