//! Models saved and loaded as safetensors: a PyTorch state dict loads and gives
//! PyTorch's logits, a round trip is exact, and a mismatched file is an error that
//! lists every problem and leaves the model as it was.

use std::path::PathBuf;

use kiln::prelude::*;

kiln::model! {
    /// The twin of `TorchMlp` in scripts/reference/torch_state_dict.py.
    struct TorchMlp { input: [20], fc1: Dense(16), Relu, fc2: Dense(5) }
}
kiln::model! {
    /// Same names, another hidden width.
    struct Wider { input: [20], fc1: Dense(32), Relu, fc2: Dense(5) }
}
kiln::model! {
    /// Other names.
    struct Renamed { input: [20], hidden: Dense(16), Relu, fc2: Dense(5, bias = false) }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-safetensors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn a_pytorch_state_dict_gives_pytorchs_logits() {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("torch_mlp.json")).unwrap()).unwrap();
    let floats = |key: &str| -> Vec<f32> {
        json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let (x, expected) = (floats("x"), floats("logits"));
    let mut net = TorchMlp::<f32>::new(0);
    net.load(fixture("torch_mlp.safetensors")).unwrap();
    let logits = net.forward(TensorRef::new(&x).unwrap());
    let worst = logits
        .as_slice()
        .iter()
        .zip(&expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0_f32, f32::max);
    let largest = expected.iter().fold(0.0_f32, |m, e| m.max(e.abs()));
    println!("largest difference from PyTorch's logits: {worst:e} (largest logit {largest})");
    // A few f32 rounding steps of the largest logit: the sums run in another order.
    assert!(worst <= 4.0 * largest * f32::EPSILON, "{worst}");

    // The same file loads into an f64 model too.
    let mut wide = TorchMlp::<f64>::new(0);
    wide.load(fixture("torch_mlp.safetensors")).unwrap();
    let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let logits64 = wide.forward(TensorRef::new(&x64).unwrap());
    for (a, e) in logits64.as_slice().iter().zip(&expected) {
        assert!((a - f64::from(*e)).abs() <= 1e-5);
    }
}

#[test]
fn save_then_load_is_exact_and_leaves_no_temporary_file() {
    let path = temp("roundtrip.safetensors");
    let net = TorchMlp::<f64>::new(3);
    net.save(&path).unwrap();
    let mut other = TorchMlp::<f64>::new(4);
    other.load(&path).unwrap();
    assert_eq!(net.params().as_slice(), other.params().as_slice());
    // Saving again replaces the file in place.
    other.save(&path).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".kiln-tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn mismatched_files_list_every_problem_and_change_nothing() {
    let path = fixture("torch_mlp.safetensors");
    let mut wider = Wider::<f32>::new(1);
    let before = wider.params().as_slice().to_vec();
    let err = wider.load(&path).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("tensor `fc1.weight` has shape [16, 20], the model needs [32, 20]"),
        "{text}"
    );
    assert!(
        text.contains("tensor `fc1.bias` has shape [16], the model needs [32]"),
        "{text}"
    );
    assert!(
        text.contains("tensor `fc2.weight` has shape [5, 16], the model needs [5, 32]"),
        "{text}"
    );
    assert_eq!(
        wider.params().as_slice(),
        &before[..],
        "a failed load changes nothing"
    );

    let mut renamed = Renamed::<f32>::new(1);
    let Error::StateDict { problems, .. } = renamed.load(&path).unwrap_err() else {
        panic!("expected a state-dict error");
    };
    assert_eq!(
        problems,
        [
            "missing tensor `hidden.weight` of shape [16, 20]",
            "missing tensor `hidden.bias` of shape [16]",
            "unexpected tensor `fc1.bias` (the model has no such parameter)",
            "unexpected tensor `fc1.weight` (the model has no such parameter)",
            "unexpected tensor `fc2.bias` (the model has no such parameter)",
        ]
    );

    let garbage = temp("garbage.safetensors");
    std::fs::write(&garbage, b"not a tensor file").unwrap();
    assert!(matches!(renamed.load(&garbage), Err(Error::Format { .. })));
    assert!(matches!(
        renamed.load(temp("absent.safetensors")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn threads_saving_to_one_path_leave_one_whole_file() {
    let dir = temp("concurrent");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shared.safetensors");
    let (a, b) = (TorchMlp::<f32>::new(1), TorchMlp::<f32>::new(2));
    std::thread::scope(|scope| {
        for net in [&a, &b] {
            let path = &path;
            scope.spawn(move || {
                for _ in 0..50 {
                    net.save(path).unwrap();
                }
            });
        }
    });
    let mut loaded = TorchMlp::<f32>::new(3);
    loaded.load(&path).unwrap();
    let values = loaded.params().as_slice();
    assert!(values == a.params().as_slice() || values == b.params().as_slice());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".kiln-tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
