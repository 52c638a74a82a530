//! Gradient clipping against PyTorch's `clip_grad_norm_` and `clip_grad_value_`
//! (fixtures from scripts/reference/torch_clip.py, float64).

use kiln::prelude::*;
use serde_json::Value;

kiln::model! {
    struct Clipped {
        input: [4],
        fc1: Dense(5), Tanh,
        fc2: Dense(3),
    }
}

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/torch_clip.json")).expect("valid JSON")
}

fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

/// `((i * 7 + seed) % 13 - 6) / 5`, as the script computes.
fn values(n: usize, seed: usize) -> Vec<f64> {
    (0..n)
        .map(|i| ((i * 7 + seed) % 13) as f64 / 5.0 - 6.0 / 5.0)
        .collect()
}

fn model() -> Clipped<f64> {
    let mut net = Clipped::<f64>::new(0);
    net.set_params(&values(Clipped::<f64>::PARAM_COUNT, 1))
        .unwrap();
    net
}

fn batch() -> Vec<f64> {
    values(6 * 4, 3).iter().map(|v| v * 2.0).collect()
}

const LABELS: [usize; 6] = [0, 2, 1, 1, 0, 2];

fn assert_close(what: &str, kiln: &[f64], torch: &[f64]) {
    assert_eq!(kiln.len(), torch.len(), "{what}");
    for (i, (a, b)) in kiln.iter().zip(torch).enumerate() {
        assert!((a - b).abs() < 1e-12, "{what}[{i}]: kiln {a}, PyTorch {b}");
    }
}

#[test]
fn clipping_matches_pytorch_in_a_custom_loop() {
    let f = fixture();
    let x = batch();
    let x = TensorRef::<f64, Shape1<4>>::new(&x).unwrap();
    let mut net = model();
    net.value_and_grad(x, &LABELS[..], &CrossEntropy::default())
        .unwrap();
    assert_close(
        "unclipped",
        net.grads().unwrap().as_slice(),
        &floats(&f["unclipped"]),
    );
    let norm = net.clip_grad_norm(0.3).unwrap();
    assert!((norm - f["norm"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!(net.grad_norm(), Some(norm));
    assert_close(
        "by norm",
        net.grads().unwrap().as_slice(),
        &floats(&f["clipped_by_norm"]),
    );

    let mut net = model();
    net.value_and_grad(x, &LABELS[..], &CrossEntropy::default())
        .unwrap();
    net.clip_grad_value(0.05).unwrap();
    assert_close(
        "by value",
        net.grads().unwrap().as_slice(),
        &floats(&f["clipped_by_value"]),
    );
    // Clipping needs gradients not yet applied.
    net.apply_gradients(&mut Sgd::new(0.1)).unwrap();
    assert!(net.clip_grad_norm(0.3).is_err());
}

#[test]
fn training_steps_clip_as_pytorch_does_before_the_optimiser() {
    let f = fixture();
    let x = batch();
    let x = TensorRef::<f64, Shape1<4>>::new(&x).unwrap();
    let cases = [
        (GradClip::Norm(0.3), "sgd"),
        (GradClip::Value(0.05), "adam"),
    ];
    for (clip, name) in cases {
        let mut net = model();
        net.set_grad_clip(Some(clip)).unwrap();
        let mut norms = Vec::new();
        let (mut sgd, mut adam) = (Sgd::new(0.5), Adam::new(0.01));
        for _ in 0..5 {
            match name {
                "sgd" => net.train_step(x, &LABELS[..], &CrossEntropy::default(), &mut sgd),
                _ => net.train_step(x, &LABELS[..], &CrossEntropy::default(), &mut adam),
            }
            .unwrap();
            norms.push(net.grad_norm().unwrap());
        }
        assert_close(
            &format!("{name} norms"),
            &norms,
            &floats(&f[format!("{name}_norms")]),
        );
        assert_close(
            &format!("{name} parameters"),
            net.params().as_slice(),
            &floats(&f[format!("{name}_params")]),
        );
    }
}

#[test]
fn bad_bounds_and_non_finite_gradients_are_errors_that_change_nothing() {
    let mut net = model();
    for bad in [GradClip::Norm(0.0), GradClip::Value(f64::NAN)] {
        assert!(matches!(
            net.set_grad_clip(Some(bad)),
            Err(Error::InvalidHyperParameter { .. })
        ));
    }
    assert_eq!(net.grad_clip(), None);
    net.set_grad_clip(Some(GradClip::Norm(1.0))).unwrap();
    assert!(net.set_grad_clip(Some(GradClip::Norm(-1.0))).is_err());
    assert_eq!(net.grad_clip(), Some(GradClip::Norm(1.0)));

    // A step whose numbers overflow is refused, and nothing moves.
    let x = vec![1e300; 4];
    let x = TensorRef::<f64, Shape1<4>>::new(&x).unwrap();
    let mut huge = model();
    huge.set_params(&vec![1e300; Clipped::<f64>::PARAM_COUNT])
        .unwrap();
    huge.set_grad_clip(Some(GradClip::Norm(1.0))).unwrap();
    let before = huge.params().as_slice().to_vec();
    let result = huge.train_step(x, &[0.0, 0.0, 0.0][..], &Mse::default(), &mut Sgd::new(0.1));
    assert!(result.is_err(), "{result:?}");
    assert_eq!(huge.params().as_slice(), &before[..]);
    assert_eq!(huge.steps(), 0);
}
