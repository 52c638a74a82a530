//! Gradient accumulation: k micro-batches make the step of one batch of all of them.

use kiln::data::Dataset;
use kiln::prelude::*;

kiln::model! {
    struct Net {
        input: [5],
        fc1: Dense(7), Tanh,
        fc2: Dense(3),
    }
}

fn data(n: usize) -> (Vec<f64>, Vec<usize>) {
    let x = (0..n * 5)
        .map(|i| ((i * 29 % 31) as f64 - 15.0) / 9.0)
        .collect();
    let y = (0..n).map(|i| (i * 7) % 3).collect();
    (x, y)
}

fn assert_close(a: &[f64], b: &[f64], what: &str) {
    for (i, (a, b)) in a.iter().zip(b).enumerate() {
        assert!((a - b).abs() < 1e-12, "{what}[{i}]: {a} vs {b}");
    }
}

/// `steps` steps of one batch of 8 against the same 8 samples in micro-batches of
/// `sizes`, with `optimizer` made fresh for each.
fn compare<O: Optimizer<f64>>(make: impl Fn() -> O, sizes: &[usize], loss: CrossEntropy) {
    let (x, y) = data(8);
    let mut whole = Net::<f64>::new(3);
    let mut parts = Net::<f64>::new(3);
    let (mut opt_whole, mut opt_parts) = (make(), make());
    for _ in 0..4 {
        let xs = TensorRef::<f64, Shape1<5>>::new(&x).unwrap();
        let expected = whole.train_step(xs, &y[..], &loss, &mut opt_whole).unwrap();
        let mut at = 0;
        let mut total = 0.0;
        for &size in sizes {
            let xs = TensorRef::<f64, Shape1<5>>::new(&x[at * 5..(at + size) * 5]).unwrap();
            let value = parts
                .accumulate_gradients(xs, &y[at..at + size], &loss)
                .unwrap();
            total += match loss.reduction {
                Reduction::Mean => value * size as f64 / 8.0,
                Reduction::Sum => value,
            };
            at += size;
        }
        parts.apply_accumulated(&mut opt_parts).unwrap();
        assert!((total - expected).abs() < 1e-12, "{total} vs {expected}");
        // Plain SGD updates inside the whole batch's backward pass, without storing
        // every gradient.
        if opt_whole.linear_step().is_none() {
            assert_close(
                parts.grads().unwrap().as_slice(),
                whole.grads().unwrap().as_slice(),
                "gradients",
            );
        }
        assert_close(
            parts.params().as_slice(),
            whole.params().as_slice(),
            "parameters",
        );
    }
    assert_eq!(parts.steps(), whole.steps());
}

#[test]
fn accumulated_micro_batches_step_as_one_batch() {
    let mean = CrossEntropy::default();
    let sum = CrossEntropy {
        reduction: Reduction::Sum,
    };
    compare(|| Adam::new(0.01), &[4, 4], mean);
    compare(|| Adam::new(0.01), &[2, 2, 2, 2], mean);
    compare(|| Sgd::new(0.1).momentum(0.9), &[5, 3], mean);
    compare(|| Sgd::new(0.1), &[1, 6, 1], mean);
    compare(|| Sgd::new(0.01), &[3, 5], sum);
}

#[test]
fn accumulation_refuses_what_does_not_add_up() {
    let (x, y) = data(4);
    let xs = TensorRef::<f64, Shape1<5>>::new(&x).unwrap();
    let mut net = Net::<f64>::new(0);
    assert!(
        net.apply_accumulated(&mut Sgd::new(0.1)).is_err(),
        "nothing accumulated"
    );
    net.accumulate_gradients(xs, &y[..], &CrossEntropy::default())
        .unwrap();
    let sum = CrossEntropy {
        reduction: Reduction::Sum,
    };
    assert!(net.accumulate_gradients(xs, &y[..], &sum).is_err());
    // A bad micro-batch adds nothing: the step is that of the good one alone.
    assert!(net
        .accumulate_gradients(xs, &[0, 1, 2, 9][..], &CrossEntropy::default())
        .is_err());
    let mut alone = Net::<f64>::new(0);
    alone
        .train_step(xs, &y[..], &CrossEntropy::default(), &mut Sgd::new(0.1))
        .unwrap();
    net.apply_accumulated(&mut Sgd::new(0.1)).unwrap();
    assert_close(
        net.params().as_slice(),
        alone.params().as_slice(),
        "parameters",
    );
}

#[test]
fn fit_accumulates_batches_into_steps() {
    let (x, y) = data(48);
    let train = Dataset::<f64, Shape1<5>>::new(x, y, Some(3)).unwrap();
    let config = |batch| FitConfig::new(3, batch).seed(5).progress(Progress::Silent);
    let fit = |config: &FitConfig| {
        let mut net = Net::<f64>::new(1);
        net.fit(
            &train,
            None,
            &CrossEntropy::default(),
            &mut Adam::new(0.01),
            config,
        )
        .map(|history| (net, history))
    };
    // Batches of 8, three to a step, against batches of 24: the same shuffled
    // samples make the same steps.
    let (accumulated, history) = fit(&config(8).accumulate(3)).unwrap();
    let (large, large_history) = fit(&config(24)).unwrap();
    assert_eq!(accumulated.steps(), 3 * 2);
    assert_eq!(large.steps(), 3 * 2);
    assert_close(
        accumulated.params().as_slice(),
        large.params().as_slice(),
        "parameters",
    );
    for (a, b) in history.epochs.iter().zip(&large_history.epochs) {
        assert!((a.loss - b.loss).abs() < 1e-12, "{} vs {}", a.loss, b.loss);
    }
    // 48 samples in batches of 8, five to a step: the epoch ends with a step of three.
    let (uneven, _) = fit(&config(8).accumulate(5)).unwrap();
    assert_eq!(uneven.steps(), 3 * 2);
    assert!(fit(&config(8).accumulate(0)).is_err());
}
