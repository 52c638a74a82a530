//! Transfer learning: partial and renamed loading, frozen layers.

use kiln::prelude::*;

kiln::model! {
    /// The pre-trained network: a convolutional backbone and a 10-class head.
    struct Pretrained {
        input: [1, 8, 8],
        conv1: Conv2d(4, kernel = 3), Relu,
        conv2: Conv2d(4, kernel = 3), Relu,
        Flatten,
        fc: Dense(10),
    }
}

kiln::model! {
    /// The same backbone with a new 3-class head under another name.
    struct Finetuned {
        input: [1, 8, 8],
        conv1: Conv2d(4, kernel = 3), Relu,
        conv2: Conv2d(4, kernel = 3), Relu,
        Flatten,
        head: Dense(3),
    }
}

kiln::model! {
    /// The backbone as a named block of a bigger model.
    struct Nested {
        input: [1, 8, 8],
        backbone: { conv1: Conv2d(4, kernel = 3), Relu, conv2: Conv2d(4, kernel = 3), Relu },
        Flatten,
        head: Dense(3),
    }
}

kiln::model! {
    /// The same head as `Pretrained` but of another size.
    struct WrongHead {
        input: [1, 8, 8],
        conv1: Conv2d(4, kernel = 3), Relu,
        conv2: Conv2d(4, kernel = 3), Relu,
        Flatten,
        fc: Dense(3),
    }
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kiln-transfer-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_partial_load_reports_loaded_missing_and_unexpected_tensors() {
    let dir = TempDir::new("partial");
    let path = dir.0.join("pretrained.safetensors");
    let pretrained = Pretrained::<f32>::new(1);
    pretrained.save(&path).unwrap();

    let mut tuned = Finetuned::<f32>::new(2);
    let before = tuned.params().as_slice().to_vec();
    // Strict (the default): the head's tensors are named, nothing changes.
    let err = tuned.load(&path).unwrap_err().to_string();
    assert!(err.contains("missing tensor `head.weight`"), "{err}");
    assert!(err.contains("unexpected tensor `fc.weight`"), "{err}");
    assert_eq!(tuned.params().as_slice(), &before[..]);

    let report = tuned
        .load_with(&path, &LoadOptions::new().strict(false))
        .unwrap();
    assert_eq!(
        report.loaded,
        names(&["conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight"])
    );
    assert_eq!(report.missing, names(&["head.bias", "head.weight"]));
    assert_eq!(report.unexpected, names(&["fc.bias", "fc.weight"]));
    for name in ["conv1.weight", "conv2.bias"] {
        assert_eq!(tuned.params().get(name), pretrained.params().get(name));
    }
    let fresh = Finetuned::<f32>::new(2);
    assert_eq!(
        tuned.params().get("head.weight"),
        fresh.params().get("head.weight")
    );
}

#[test]
fn a_shape_mismatch_is_refused_by_name_even_when_not_strict() {
    let dir = TempDir::new("shape");
    let path = dir.0.join("pretrained.safetensors");
    Pretrained::<f32>::new(1).save(&path).unwrap();
    let mut wrong = WrongHead::<f32>::new(3);
    let before = wrong.params().as_slice().to_vec();
    let err = wrong
        .load_with(&path, &LoadOptions::new().strict(false))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tensor `fc.weight` has shape [10, 64], the model needs [3, 64]"),
        "{err}"
    );
    assert_eq!(wrong.params().as_slice(), &before[..]);
}

#[test]
fn renames_load_a_backbone_into_a_block_and_back() {
    let dir = TempDir::new("rename");
    let flat = dir.0.join("pretrained.safetensors");
    let pretrained = Pretrained::<f32>::new(1);
    pretrained.save(&flat).unwrap();

    let mut nested = Nested::<f32>::new(4);
    let options = LoadOptions::new()
        .strict(false)
        .rename("conv", "backbone.conv");
    let report = nested.load_with(&flat, &options).unwrap();
    assert_eq!(report.loaded.len(), 4, "{report:?}");
    assert_eq!(report.unexpected, names(&["fc.bias", "fc.weight"]));
    assert_eq!(
        nested.params().get("backbone.conv2.weight"),
        pretrained.params().get("conv2.weight")
    );

    // And back: the nested model's backbone into the flat one, strictly but for the head.
    let nested_path = dir.0.join("nested.safetensors");
    nested.save(&nested_path).unwrap();
    let mut tuned = Finetuned::<f32>::new(5);
    let report = tuned
        .load_with(&nested_path, &LoadOptions::new().rename("backbone.", ""))
        .unwrap();
    assert_eq!(report.loaded.len(), 6);
    assert_eq!(
        tuned.params().get("head.bias"),
        nested.params().get("head.bias")
    );

    // Two file tensors that rename to one name are refused.
    let err = tuned
        .load_with(
            &flat,
            &LoadOptions::new().strict(false).rename("conv1.", "conv2."),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("both rename to `conv2.weight`"), "{err}");
}

#[test]
fn a_checkpoint_holding_nan_is_refused() {
    let dir = TempDir::new("nan");
    let path = dir.0.join("nan.safetensors");
    let mut net = Pretrained::<f32>::new(1);
    let mut values = net.params().as_slice().to_vec();
    values[3] = f32::NAN;
    net.set_params(&values).unwrap();
    net.save(&path).unwrap();
    let mut other = Pretrained::<f32>::new(2);
    let before = other.params().as_slice().to_vec();
    let err = other.load(&path).unwrap_err().to_string();
    assert!(
        err.contains("tensor `conv1.weight` holds NaN at index 3"),
        "{err}"
    );
    assert_eq!(other.params().as_slice(), &before[..]);
}

fn batch(n: usize) -> (Vec<f32>, Vec<usize>) {
    let x = (0..n * 64)
        .map(|i| ((i * 37 % 29) as f32 - 14.0) / 10.0)
        .collect();
    let y = (0..n).map(|i| i % 3).collect();
    (x, y)
}

/// Trains `Finetuned` one step, freezes its backbone, trains five more: the backbone
/// does not move, even with momentum or Adam state from the first step and weight decay.
fn check_frozen<O: Optimizer<f32>>(mut optimiser: O) {
    let (x, y) = batch(16);
    let x = TensorRef::<f32, Shape3<1, 8, 8>>::new(&x).unwrap();
    let mut net = Finetuned::<f32>::new(7);
    let mut step = |net: &mut Finetuned<f32>| {
        net.train_step(x, &y[..], &CrossEntropy::default(), &mut optimiser)
            .unwrap();
    };
    step(&mut net);
    assert_eq!(net.freeze("conv*").unwrap(), 4);
    assert_eq!(net.is_frozen("conv1.weight"), Some(true));
    assert_eq!(net.is_frozen("head.weight"), Some(false));
    assert_eq!(net.is_frozen("nothing"), None);
    let backbone = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"];
    let before: Vec<Vec<f32>> = backbone
        .iter()
        .map(|n| net.params().get(n).unwrap().to_vec())
        .collect();
    let head = net.params().get("head.weight").unwrap().to_vec();
    for _ in 0..5 {
        step(&mut net);
    }
    for (name, before) in backbone.iter().zip(&before) {
        assert_eq!(net.params().get(name).unwrap(), &before[..], "{name} moved");
        assert!(net
            .grads()
            .unwrap()
            .get(name)
            .unwrap()
            .iter()
            .all(|&g| g == 0.0));
    }
    assert_ne!(
        net.params().get("head.weight").unwrap(),
        &head[..],
        "the head trains"
    );
    assert_eq!(net.unfreeze("conv1").unwrap(), 2);
    assert_eq!(net.is_frozen("conv1.bias"), Some(false));
    step(&mut net);
    assert_ne!(net.params().get("conv1.weight").unwrap(), &before[0][..]);
    assert_eq!(net.params().get("conv2.weight").unwrap(), &before[2][..]);
}

#[test]
fn frozen_layers_stay_bit_identical_under_every_optimiser() {
    check_frozen(Sgd::new(0.1));
    check_frozen(Sgd::new(0.1).momentum(0.9).weight_decay(1e-2));
    check_frozen(AdamW::new(1e-2));
    check_frozen(Adam::new(1e-2));
    let mut net = Finetuned::<f32>::new(7);
    assert!(net.freeze("conv3").is_err());
    assert!(
        net.freeze("conv").is_err(),
        "a prefix names whole layers, not parts of names"
    );
    assert_eq!(net.freeze("*.bias").unwrap(), 3);
}

#[test]
fn a_frozen_prefix_changes_no_trainable_gradient() {
    // The backward pass skips the frozen convolutions; the head's gradients are those
    // of the full pass, and the input's gradient still flows when asked for.
    let (x, y) = batch(8);
    let xs: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let x = TensorRef::<f64, Shape3<1, 8, 8>>::new(&xs).unwrap();
    let mut full = Finetuned::<f64>::new(9);
    let mut frozen = Finetuned::<f64>::new(9);
    frozen.freeze("conv1").unwrap();
    frozen.freeze("conv2").unwrap();
    full.value_and_grad(x, &y[..], &CrossEntropy::default())
        .unwrap();
    frozen
        .value_and_grad(x, &y[..], &CrossEntropy::default())
        .unwrap();
    assert_eq!(
        full.grads().unwrap().get("head.weight"),
        frozen.grads().unwrap().get("head.weight")
    );
    assert!(frozen
        .grads()
        .unwrap()
        .get("conv2.weight")
        .unwrap()
        .iter()
        .all(|&g| g == 0.0));
    // Freezing only conv1: conv2's gradient is the full pass's.
    let mut partly = Finetuned::<f64>::new(9);
    partly.freeze("conv1").unwrap();
    partly
        .value_and_grad(x, &y[..], &CrossEntropy::default())
        .unwrap();
    assert_eq!(
        full.grads().unwrap().get("conv2.weight"),
        partly.grads().unwrap().get("conv2.weight")
    );
    // The input's gradient is the same with every layer frozen.
    let (_, a) = full
        .value_and_grad_to_input(x, &y[..], &CrossEntropy::default())
        .map(|(l, g)| (l, g.to_vec()))
        .unwrap();
    frozen.freeze("head").unwrap();
    let (_, b) = frozen
        .value_and_grad_to_input(x, &y[..], &CrossEntropy::default())
        .map(|(l, g)| (l, g.to_vec()))
        .unwrap();
    assert_eq!(a, b);
}

/// Parameters after `steps` steps of `optimiser` on a fixed batch, with `scale` on the
/// backbone's rate.
fn trained_f64<O: Optimizer<f64>>(
    mut optimiser: O,
    scale: Option<f64>,
    steps: usize,
) -> Finetuned<f64> {
    let (x, y) = batch(8);
    let xs: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let x = TensorRef::<f64, Shape3<1, 8, 8>>::new(&xs).unwrap();
    let mut net = Finetuned::<f64>::new(11);
    if let Some(scale) = scale {
        assert_eq!(net.set_lr_scale("conv*", scale).unwrap(), 4);
    }
    for _ in 0..steps {
        net.train_step(x, &y[..], &CrossEntropy::default(), &mut optimiser)
            .unwrap();
    }
    net
}

#[test]
fn a_learning_rate_scale_scales_the_updates_of_its_tensors() {
    let start = Finetuned::<f64>::new(11);
    for (name, scaled, plain) in [
        (
            "adam",
            trained_f64(Adam::new(0.01), Some(0.1), 1),
            trained_f64(Adam::new(0.01), None, 1),
        ),
        (
            "adamw",
            trained_f64(AdamW::new(0.01), Some(0.1), 1),
            trained_f64(AdamW::new(0.01), None, 1),
        ),
        (
            "sgd+momentum",
            trained_f64(Sgd::new(0.1).momentum(0.9), Some(0.1), 1),
            trained_f64(Sgd::new(0.1).momentum(0.9), None, 1),
        ),
    ] {
        for tensor in ["conv1.weight", "conv2.bias"] {
            let (s, p, o) = (
                scaled.params().get(tensor).unwrap(),
                plain.params().get(tensor).unwrap(),
                start.params().get(tensor).unwrap(),
            );
            for ((s, p), o) in s.iter().zip(p).zip(o) {
                assert!(((s - o) - 0.1 * (p - o)).abs() < 1e-15, "{name} {tensor}");
            }
            assert!(
                s.iter().zip(o).any(|(s, o)| s != o),
                "{name}: {tensor} moved"
            );
        }
        assert_eq!(
            scaled.params().get("head.weight"),
            plain.params().get("head.weight")
        );
    }
    // Plain SGD over five steps: every tensor at half of a rate of 0.2 trains as the
    // whole model at a rate of 0.1.
    let half_everywhere = {
        let (x, y) = batch(8);
        let xs: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let x = TensorRef::<f64, Shape3<1, 8, 8>>::new(&xs).unwrap();
        let mut net = Finetuned::<f64>::new(11);
        net.set_lr_scale("conv*", 0.5).unwrap();
        net.set_lr_scale("head", 0.5).unwrap();
        let mut sgd = Sgd::new(0.2);
        for _ in 0..5 {
            net.train_step(x, &y[..], &CrossEntropy::default(), &mut sgd)
                .unwrap();
        }
        net
    };
    let half_rate = trained_f64(Sgd::new(0.1), None, 5);
    for (a, b) in half_everywhere
        .params()
        .as_slice()
        .iter()
        .zip(half_rate.params().as_slice())
    {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    let mut net = Finetuned::<f64>::new(0);
    assert_eq!(net.lr_scale("conv1.weight"), Some(1.0));
    assert!(net.set_lr_scale("conv1", -0.5).is_err());
    assert!(net.set_lr_scale("conv1", f64::NAN).is_err());
    assert!(net.set_lr_scale("nothing", 0.5).is_err());
    net.set_lr_scale("conv1", 0.25).unwrap();
    assert_eq!(net.lr_scale("conv1.bias"), Some(0.25));
}

kiln::model! {
    struct Normed {
        input: [4],
        fc: Dense(3),
        bn: BatchNorm1d,
        head: Dense(2),
    }
}

#[test]
fn a_checkpoint_with_a_negative_running_variance_is_refused() {
    let dir = TempDir::new("variance");
    let path = dir.0.join("variance.safetensors");
    let mut net = Normed::<f32>::new(1);
    let mut buffers = net.buffers().as_slice().to_vec();
    let var = Normed::<f32>::SPEC.buffer("bn.running_var").unwrap();
    buffers[var.offset + 1] = -0.5;
    net.set_buffers(&buffers).unwrap();
    net.save(&path).unwrap();
    let mut other = Normed::<f32>::new(2);
    let before = (
        other.params().as_slice().to_vec(),
        other.buffers().as_slice().to_vec(),
    );
    let err = other.load(&path).unwrap_err().to_string();
    assert!(
        err.contains("tensor `bn.running_var` holds -0.5 at index 1"),
        "{err}"
    );
    assert_eq!(other.params().as_slice(), &before.0[..]);
    assert_eq!(other.buffers().as_slice(), &before.1[..]);
}
