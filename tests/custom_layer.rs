//! Layers users write: a user layer trains, saves and checks like a built-in one.

use kiln::custom::{Backward, Forward, Layer, ParamDecl};
use kiln::gradcheck::{check_gradients, GradCheck};
use kiln::init::Init;
use kiln::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `y = x · σ(w ⊙ x + b)`, one gate per feature.
pub struct Gate<const N: usize>;

impl<const N: usize> Layer for Gate<N> {
    const INPUT: &'static [usize] = &[N];
    const OUTPUT: &'static [usize] = &[N];
    const PARAMS: &'static [ParamDecl] = &[
        ParamDecl::new("weight", &[N], Init::Ones),
        ParamDecl::new("bias", &[N], Init::Zeros).unregularized(),
    ];
    const SAVED: usize = N;
    const FLOPS: u64 = 6 * N as u64;

    fn forward<T: Float>(io: Forward<'_, T>) {
        let (w, b) = (io.params.get(0), io.params.get(1));
        let rows = io.input.chunks(N).zip(io.output.chunks_mut(N));
        for ((x, y), s) in rows.zip(io.saved.chunks_mut(N)) {
            for i in 0..N {
                s[i] = T::ONE / (T::ONE + (-(w[i] * x[i] + b[i])).exp());
                y[i] = x[i] * s[i];
            }
        }
    }

    fn backward<T: Float>(mut io: Backward<'_, T>) {
        let w = io.params.get(0);
        let [gw, gb] = io.grad_params.split();
        for (n, (x, s)) in io.input.chunks(N).zip(io.saved.chunks(N)).enumerate() {
            let dy = &io.grad_output[n * N..][..N];
            for i in 0..N {
                let dz = dy[i] * x[i] * s[i] * (T::ONE - s[i]);
                gw[i] += dz * x[i];
                gb[i] += dz;
                if let Some(dx) = io.grad_input.as_deref_mut() {
                    dx[n * N + i] += dy[i] * s[i] + dz * w[i];
                }
            }
        }
    }
}

/// PyTorch's `Linear`, written as a user would.
pub struct MyLinear<const I: usize, const O: usize>;

impl<const I: usize, const O: usize> Layer for MyLinear<I, O> {
    const INPUT: &'static [usize] = &[I];
    const OUTPUT: &'static [usize] = &[O];
    const PARAMS: &'static [ParamDecl] = &[
        ParamDecl::new("weight", &[O, I], Init::FanInUniform { fan_in: I }),
        ParamDecl::new("bias", &[O], Init::FanInUniform { fan_in: I }).unregularized(),
    ];
    const FLOPS: u64 = (2 * I * O + O) as u64;

    fn forward<T: Float>(io: Forward<'_, T>) {
        let (w, b) = (io.params.get(0), io.params.get(1));
        for (x, y) in io.input.chunks(I).zip(io.output.chunks_mut(O)) {
            for o in 0..O {
                y[o] = b[o] + (0..I).map(|i| w[o * I + i] * x[i]).sum::<T>();
            }
        }
    }

    fn backward<T: Float>(mut io: Backward<'_, T>) {
        let w = io.params.get(0);
        let [gw, gb] = io.grad_params.split();
        for n in 0..io.batch {
            let (x, dy) = (&io.input[n * I..][..I], &io.grad_output[n * O..][..O]);
            for o in 0..O {
                gb[o] += dy[o];
                for i in 0..I {
                    gw[o * I + i] += dy[o] * x[i];
                }
            }
            if let Some(dx) = io.grad_input.as_deref_mut() {
                for i in 0..I {
                    dx[n * I + i] += (0..O).map(|o| w[o * I + i] * dy[o]).sum::<T>();
                }
            }
        }
    }
}

/// Adds 1 while training, so a test can see the mode the layer is told.
pub struct MarkTraining<const N: usize>;

impl<const N: usize> Layer for MarkTraining<N> {
    const INPUT: &'static [usize] = &[N];
    const OUTPUT: &'static [usize] = &[N];

    fn forward<T: Float>(io: Forward<'_, T>) {
        let shift = if io.training { T::ONE } else { T::ZERO };
        for (y, &x) in io.output.iter_mut().zip(io.input) {
            *y = x + shift;
        }
    }

    fn backward<T: Float>(io: Backward<'_, T>) {
        if let Some(dx) = io.grad_input {
            for (d, &g) in dx.iter_mut().zip(io.grad_output) {
                *d += g;
            }
        }
    }
}

kiln::model! {
    pub struct Gated {
        input: [6],
        fc: Dense(5),
        gate: use Gate<5>,
        head: Dense(3),
    }
}

#[test]
fn a_user_layer_checks_against_finite_differences() {
    let net = Gated::<f64>::new(3);
    let x: Vec<f64> = (0..4 * 6)
        .map(|i| ((i * 7 % 11) as f64 - 5.0) / 4.0)
        .collect();
    let report = check_gradients(
        &net,
        &x,
        &[0, 2, 1, 2][..],
        &CrossEntropy::default(),
        GradCheck::default(),
    )
    .expect("checks");
    println!("{report}");
    assert!(report.worst() < 1e-7, "{report}");
}

kiln::model! {
    pub struct Plain {
        input: [6],
        fc: Dense(5), Relu,
        r: Residual { lin: Dense(5), Tanh },
        head: Dense(3),
    }
}

kiln::model! {
    pub struct Written {
        input: [6],
        fc: use MyLinear<6, 5> -> [5], Relu,
        r: Residual { lin: use MyLinear<5, 5>, Tanh },
        head: Dense(3),
    }
}

fn batch(n: usize, seed: usize) -> Vec<f64> {
    (0..n * 6)
        .map(|i| (((i + seed) * 37 % 23) as f64 - 11.0) / 7.0)
        .collect()
}

/// `Written`'s parameters as `Plain`'s, by name.
fn copy_by_name(from: &Plain<f64>, to: &mut Written<f64>) {
    let mut values = to.params().as_slice().to_vec();
    for info in Written::<f64>::SPEC.params {
        let source = from.params().get(&info.full_name()).expect("same names");
        values[info.range()].copy_from_slice(source);
    }
    to.set_params(&values).unwrap();
}

#[test]
fn user_layers_name_their_tensors_under_the_layer_after_the_counted_ones() {
    let names: Vec<String> = Written::<f32>::SPEC
        .params
        .iter()
        .map(|p| p.full_name().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "head.weight",
            "head.bias",
            "fc.weight",
            "fc.bias",
            "r.lin.weight",
            "r.lin.bias"
        ]
    );
    assert_eq!(Written::<f32>::PARAM_COUNT, Plain::<f32>::PARAM_COUNT);
    assert_eq!(
        Written::<f32>::FLOPS_PER_SAMPLE,
        Plain::<f32>::FLOPS_PER_SAMPLE
    );
    let summary = Written::<f32>::summary().to_string();
    println!("{summary}");
    let row = summary
        .lines()
        .find(|row| row.starts_with("fc "))
        .expect("a row for fc");
    assert!(
        row.contains("use MyLinear<6, 5> -> [5]") && row.ends_with(" 35"),
        "{row}"
    );
    // Initialised as declared: the bound of `FanInUniform`, ones and zeros.
    let net = Written::<f32>::new(5);
    let weight = net.params().get("fc.weight").unwrap();
    let bound = 1.0 / 6f32.sqrt();
    assert!(weight.iter().all(|w| w.abs() <= bound) && weight.iter().any(|&w| w != 0.0));
    let gated = Gated::<f32>::new(0);
    assert!(gated
        .params()
        .get("gate.weight")
        .unwrap()
        .iter()
        .all(|&w| w == 1.0));
    assert!(gated
        .params()
        .get("gate.bias")
        .unwrap()
        .iter()
        .all(|&w| w == 0.0));
}

#[test]
fn a_user_layer_trains_as_the_built_in_layer_it_restates() {
    let plain = Plain::<f64>::new(11);
    let mut written = Written::<f64>::new(99);
    copy_by_name(&plain, &mut written);
    let mut plain = plain;
    let x = batch(8, 3);
    let x = TensorRef::<f64, Shape1<6>>::new(&x).unwrap();
    let labels = [0, 1, 2, 2, 1, 0, 1, 2];
    let (mut opt_a, mut opt_b) = (Adam::new(0.01), Adam::new(0.01));
    for _ in 0..20 {
        let a = plain
            .train_step(x, &labels[..], &CrossEntropy::default(), &mut opt_a)
            .unwrap();
        let b = written
            .train_step(x, &labels[..], &CrossEntropy::default(), &mut opt_b)
            .unwrap();
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    // Plain SGD updates inside the backward pass (without the non-finite guard).
    plain.set_nonfinite_guard(false);
    written.set_nonfinite_guard(false);
    let (mut sgd_a, mut sgd_b) = (Sgd::new(0.1), Sgd::new(0.1));
    for _ in 0..5 {
        plain
            .train_step(x, &labels[..], &CrossEntropy::default(), &mut sgd_a)
            .unwrap();
        written
            .train_step(x, &labels[..], &CrossEntropy::default(), &mut sgd_b)
            .unwrap();
    }
    for info in Written::<f64>::SPEC.params {
        let name = info.full_name();
        let (a, b) = (
            plain.params().get(&name).unwrap(),
            written.params().get(&name).unwrap(),
        );
        for (a, b) in a.iter().zip(b) {
            assert!((a - b).abs() < 1e-12, "{name}: {a} vs {b}");
        }
    }
    // The input's gradient, through a user layer that comes first.
    let (la, ga) = plain
        .value_and_grad_to_input(x, &labels[..], &CrossEntropy::default())
        .map(|(l, g)| (l, g.to_vec()))
        .unwrap();
    let (lb, gb) = written
        .value_and_grad_to_input(x, &labels[..], &CrossEntropy::default())
        .map(|(l, g)| (l, g.to_vec()))
        .unwrap();
    assert!((la - lb).abs() < 1e-12);
    for (a, b) in ga.iter().zip(&gb) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    assert!(ga.iter().any(|&g| g != 0.0));
}

#[test]
fn a_checkpoint_with_user_layers_loads_into_the_built_in_model() {
    let written = Written::<f32>::new(4);
    let dir = std::env::temp_dir().join(format!("kiln-custom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("written.safetensors");
    written.save(&path).unwrap();
    let mut plain = Plain::<f32>::new(0);
    plain.load(&path).unwrap();
    let x: Vec<f32> = batch(3, 1).iter().map(|&v| v as f32).collect();
    let x = TensorRef::<f32, Shape1<6>>::new(&x).unwrap();
    // Equal up to the order of the sums (a loop here, a GEMM there).
    let (a, b) = (written.forward(x), plain.forward(x));
    for (a, b) in a.as_slice().iter().zip(b.as_slice()) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    let mut again = Written::<f32>::new(7);
    again.load(&path).unwrap();
    assert_eq!(again.params().as_slice(), written.params().as_slice());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_user_layer_is_told_whether_the_model_trains() {
    kiln::model! {
        struct Marked {
            input: [2],
            mark: use MarkTraining<2>,
        }
    }
    let mut net = Marked::<f32>::new(0);
    let x = [1.0f32, 2.0];
    let x = TensorRef::<f32, Shape1<2>>::new(&x).unwrap();
    assert_eq!(net.forward(x).as_slice(), &[1.0, 2.0]);
    assert_eq!(net.forward_train(x), &[2.0, 3.0]);
}

static BACKWARD_CALLS: AtomicUsize = AtomicUsize::new(0);

/// `y = w ⊙ x`, counting its backward passes.
pub struct Counted<const N: usize>;

impl<const N: usize> Layer for Counted<N> {
    const INPUT: &'static [usize] = &[N];
    const OUTPUT: &'static [usize] = &[N];
    const PARAMS: &'static [ParamDecl] = &[ParamDecl::new("weight", &[N], Init::Ones)];

    fn forward<T: Float>(io: Forward<'_, T>) {
        let w = io.params.get(0);
        for (y, x) in io.output.chunks_mut(N).zip(io.input.chunks(N)) {
            for i in 0..N {
                y[i] = w[i] * x[i];
            }
        }
    }

    fn backward<T: Float>(mut io: Backward<'_, T>) {
        BACKWARD_CALLS.fetch_add(1, Ordering::SeqCst);
        let w = io.params.get(0);
        let gw = io.grad_params.get_mut(0);
        for n in 0..io.batch {
            for i in 0..N {
                let (x, dy) = (io.input[n * N + i], io.grad_output[n * N + i]);
                gw[i] += dy * x;
                if let Some(dx) = io.grad_input.as_deref_mut() {
                    dx[n * N + i] += dy * w[i];
                }
            }
        }
    }
}

#[test]
fn a_frozen_user_layer_before_every_trainable_one_does_no_gradient_work() {
    kiln::model! {
        struct Tail {
            input: [3],
            fc0: Dense(4),
            scale: use Counted<4>,
            head: Dense(2),
        }
    }
    let mut net = Tail::<f32>::new(1);
    let x = [0.5f32, -1.0, 2.0, 1.0, 0.0, -0.5];
    let x = TensorRef::<f32, Shape1<3>>::new(&x).unwrap();
    let mut opt = Adam::new(0.01);
    let mut step = |net: &mut Tail<f32>| {
        net.train_step(x, &[0, 1][..], &CrossEntropy::default(), &mut opt)
            .unwrap();
    };
    let calls = || BACKWARD_CALLS.load(Ordering::SeqCst);
    step(&mut net);
    assert_eq!(calls(), 1);
    net.freeze("fc0").unwrap();
    net.freeze("scale").unwrap();
    let frozen = net.params().get("scale.weight").unwrap().to_vec();
    step(&mut net);
    assert_eq!(calls(), 1, "skipped: nothing before it trains");
    assert_eq!(net.params().get("scale.weight").unwrap(), &frozen[..]);
    // Its input gradient is still there when asked for.
    net.value_and_grad_to_input(x, &[0, 1][..], &CrossEntropy::default())
        .unwrap();
    assert_eq!(calls(), 2);
    // With fc0 training again, the gradient has to pass through it.
    net.unfreeze("fc0").unwrap();
    step(&mut net);
    assert_eq!(calls(), 3);
    assert_eq!(net.params().get("scale.weight").unwrap(), &frozen[..]);
}

/// Subtracts the batch mean in training and a running mean in inference, as batch norm
/// centres: a buffer tracked in training (`running_mean`, and `seen`, a count saved as
/// an integer), and the batch mean kept in fixed scratch.
pub struct Center<const N: usize>;

impl<const N: usize> Layer for Center<N> {
    const INPUT: &'static [usize] = &[N];
    const OUTPUT: &'static [usize] = &[N];
    const BUFFERS: &'static [ParamDecl] = &[
        ParamDecl::new("running_mean", &[N], Init::Zeros),
        ParamDecl::new("seen", &[], Init::Zeros).count(),
    ];
    const FIXED: usize = N;

    fn forward<T: Float>(io: Forward<'_, T>) {
        let (running, seen) = io.buffers.split_at_mut(N);
        let mean = io.fixed;
        if io.training {
            mean.fill(T::ZERO);
            for x in io.input.chunks(N) {
                for i in 0..N {
                    mean[i] += x[i] / T::from_f64(io.batch as f64);
                }
            }
            for i in 0..N {
                running[i] = running[i] * T::from_f64(0.9) + mean[i] * T::from_f64(0.1);
            }
            seen[0] += T::ONE;
        } else {
            mean.copy_from_slice(running);
        }
        for (y, x) in io.output.chunks_mut(N).zip(io.input.chunks(N)) {
            for i in 0..N {
                y[i] = x[i] - mean[i];
            }
        }
    }

    fn backward<T: Float>(io: Backward<'_, T>) {
        let Some(dx) = io.grad_input else { return };
        let mut mean_dy = [T::ZERO; N];
        for dy in io.grad_output.chunks(N) {
            for i in 0..N {
                mean_dy[i] += dy[i] / T::from_f64(io.batch as f64);
            }
        }
        for (d, dy) in dx.chunks_mut(N).zip(io.grad_output.chunks(N)) {
            for i in 0..N {
                d[i] += dy[i] - mean_dy[i];
            }
        }
    }
}

/// Adds noise of scale `1e-3` drawn from the model's generator, in training only.
pub struct Jitter<const N: usize>;

impl<const N: usize> Layer for Jitter<N> {
    const INPUT: &'static [usize] = &[N];
    const OUTPUT: &'static [usize] = &[N];

    fn forward<T: Float>(mut io: Forward<'_, T>) {
        for (y, &x) in io.output.iter_mut().zip(io.input) {
            let noise = io
                .rng
                .as_deref_mut()
                .map_or(0.0, |rng| 1e-3 * (kiln::init::uniform(rng) - 0.5));
            *y = x + T::from_f64(noise);
        }
    }

    fn backward<T: Float>(io: Backward<'_, T>) {
        if let Some(dx) = io.grad_input {
            for (d, &g) in dx.iter_mut().zip(io.grad_output) {
                *d += g;
            }
        }
    }
}

kiln::model! {
    pub struct Centred {
        input: [4],
        fc: Dense(3),
        center: use Center<3>,
        jitter: use Jitter<3>,
        head: Dense(2),
    }
}

#[test]
fn a_user_layer_keeps_buffers_and_fixed_scratch_and_draws_from_the_model_generator() {
    let names: Vec<String> = Centred::<f32>::SPEC
        .buffers
        .iter()
        .map(|b| b.full_name().into_owned())
        .collect();
    assert_eq!(names, ["center.running_mean", "center.seen"]);
    let seen = Centred::<f32>::SPEC.buffer("center.seen").unwrap();
    assert_eq!(seen.kind, kiln::TensorKind::Count);

    let x: Vec<f32> = (0..8 * 4)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
        .collect();
    let x = TensorRef::<f32, Shape1<4>>::new(&x).unwrap();
    let labels = [0, 1, 1, 0, 1, 0, 0, 1];
    let run = |seed: u64| {
        let mut net = Centred::<f32>::new(3);
        net.set_params(Centred::<f32>::new(seed).params().as_slice())
            .unwrap();
        let mut opt = Sgd::new(0.1);
        for _ in 0..4 {
            net.train_step(x, &labels[..], &CrossEntropy::default(), &mut opt)
                .unwrap();
        }
        net
    };
    // One seed draws the same noise.
    let (a, b) = (run(3), run(3));
    assert_eq!(a.params().as_slice(), b.params().as_slice());
    // Another seed's generator draws other noise, of the layer's small scale.
    let mut p = Centred::<f32>::new(3);
    let mut q = Centred::<f32>::new(4);
    q.set_params(p.params().as_slice()).unwrap();
    let (yp, yq) = (p.forward_train(x).to_vec(), q.forward_train(x).to_vec());
    assert_ne!(yp, yq);
    assert!(yp.iter().zip(&yq).all(|(a, b)| (a - b).abs() < 1e-2));
    assert_eq!(a.buffers().get("center.seen"), Some(&[4.0f32][..]));
    let running = a.buffers().get("center.running_mean").unwrap();
    assert!(running.iter().all(|&m| m != 0.0));
    // Inference reads the running mean and draws nothing: two calls agree.
    assert_eq!(a.forward(x).as_slice(), a.forward(x).as_slice());

    // Saved and loaded with the model; the count as an integer.
    let dir = std::env::temp_dir().join(format!("kiln-center-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("centred.safetensors");
    a.save(&path).unwrap();
    let mut c = Centred::<f32>::new(9);
    c.load(&path).unwrap();
    assert_eq!(c.buffers().as_slice(), a.buffers().as_slice());
    assert_eq!(c.forward(x).as_slice(), a.forward(x).as_slice());
    std::fs::remove_dir_all(&dir).unwrap();
}

kiln::model! {
    pub struct CentredSmooth {
        input: [4],
        fc: Dense(3), Tanh,
        center: use Center<3>,
        head: Dense(2),
    }
}

#[test]
fn a_user_layer_with_buffers_and_fixed_scratch_checks_against_finite_differences() {
    let net = CentredSmooth::<f64>::new(2);
    let x: Vec<f64> = (0..5 * 4)
        .map(|i| ((i * 5 % 11) as f64 - 5.0) / 4.0)
        .collect();
    let report = check_gradients(
        &net,
        &x,
        &[0, 1, 1, 0, 1][..],
        &CrossEntropy::default(),
        GradCheck::default(),
    )
    .expect("checks");
    println!("{report}");
    assert!(report.worst() < 1e-7, "{report}");
}
