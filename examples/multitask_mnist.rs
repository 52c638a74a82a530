//! One trunk, two heads: a network that reads a handwritten digit once and answers two
//! questions about it, which digit it is and whether it is greater than 4, trained on
//! the sum of both heads' losses (the second weighted by one half).
//!
//! ```text
//! cargo run --release --example multitask_mnist                                 # shipped 8x8 digits
//! cargo run --release --example multitask_mnist -- --data ../shared/data/mnist  # MNIST IDX files
//! ```
//!
//! The MNIST directory can also come from `KILN_MNIST_DIR`; without one, the same
//! network (with 64 inputs) trains on the UCI 8x8 digits in `data/`. Each epoch's line
//! shows both heads' loss and accuracy, on the training batches and on the validation
//! split (`digit_accuracy`, `val_big_accuracy`, ...); at the end each head is scored on
//! the test set, which training never saw, and the two heads are checked against each
//! other.

mod common;

use std::time::Instant;

use kiln::data::Dataset;
use kiln::prelude::*;
use kiln::train::Evaluation;

kiln::model! {
    /// The two-headed network for 28x28 MNIST digits.
    pub struct MnistTasks {
        inputs: { image: [784] },
        trunk: image >> { Dense(256), Relu, Dropout(0.2), Dense(128), Relu },
        outputs: { digit: trunk >> Dense(10), big: trunk >> Dense(2) },
    }
}

kiln::model! {
    /// The same network for the 8x8 digits that ship with kiln.
    pub struct DigitTasks {
        inputs: { image: [64] },
        trunk: image >> { Dense(256), Relu, Dropout(0.2), Dense(128), Relu },
        outputs: { digit: trunk >> Dense(10), big: trunk >> Dense(2) },
    }
}

/// The second task's labels: 1 for a digit greater than 4.
fn big(digits: &[usize]) -> Vec<usize> {
    digits.iter().map(|&d| usize::from(d > 4)).collect()
}

fn main() {
    common::main_with("multitask_mnist", |args| {
        // 1. Load the digits, and pack each set with both tasks' labels: the image
        //    once, then per sample its digit and whether it is big.
        match &args.data {
            Some(dir) => {
                println!("MNIST from {}", dir.display());
                let (train, test) = kiln::data::read_mnist::<f32, Shape1<784>>(dir)?;
                let pack = |d: &Dataset<f32, Shape1<784>>| {
                    MnistTasks::<f32>::dataset(
                        MnistTasksInputs {
                            image: d.features().as_slice(),
                        },
                        MnistTasksOutputs {
                            digit: d.targets(),
                            big: &big(d.targets()),
                        },
                    )
                };
                // 2. The losses of both heads, the second weighted by one half.
                let loss = MnistTasksOutputs {
                    digit: CrossEntropy::default(),
                    big: CrossEntropy::default().weight(0.5),
                };
                let epochs = args.epochs.unwrap_or(5);
                let model = MnistTasks::<f32>::new(0);
                run(model, pack(&train)?, pack(&test)?, &loss, epochs, |m, d| {
                    let s = m.evaluate_outputs(d, &loss, 1000)?;
                    Ok((s.digit, s.big))
                })
            }
            None => {
                let (train, test) = common::shipped_digits::<Shape1<64>>()?;
                let pack = |d: &Dataset<f32, Shape1<64>>| {
                    DigitTasks::<f32>::dataset(
                        DigitTasksInputs {
                            image: d.features().as_slice(),
                        },
                        DigitTasksOutputs {
                            digit: d.targets(),
                            big: &big(d.targets()),
                        },
                    )
                };
                let loss = DigitTasksOutputs {
                    digit: CrossEntropy::default(),
                    big: CrossEntropy::default().weight(0.5),
                };
                let epochs = args.epochs.unwrap_or(40);
                let model = DigitTasks::<f32>::new(0);
                run(model, pack(&train)?, pack(&test)?, &loss, epochs, |m, d| {
                    let s = m.evaluate_outputs(d, &loss, 1000)?;
                    Ok((s.digit, s.big))
                })
            }
        }
    });
}

/// Fits `model` on `train` with `loss`, prints each head's figures per epoch, then
/// scores each head on `test` with `score`.
fn run<M, L>(
    mut model: M,
    train: Dataset<f32, M::Input>,
    test: Dataset<f32, M::Input>,
    loss: &L,
    epochs: usize,
    score: impl Fn(&mut M, &Dataset<f32, M::Input>) -> Result<(Evaluation, Evaluation), Error>,
) -> Result<(), Error>
where
    M: Model<f32> + Send,
    L: Loss<f32, Target = [usize]> + Sync,
{
    println!("{} training and {} test samples\n", train.len(), test.len());
    println!("{}\n", M::summary());

    // 3. Fit: Adam, batches of 32, 10 % held out for validation, early stopping on
    //    the digit head's validation loss, keeping its best weights.
    let config = FitConfig::new(epochs, 32)
        .seed(1)
        .validation_split(0.1)
        .early_stopping(EarlyStopping::new(Monitor::OutputValLoss("digit"), 3))
        .progress(Progress::Lines);
    let started = Instant::now();
    let history = model.fit(&train, None, loss, &mut Adam::new(1e-3), &config)?;
    let seconds = started.elapsed().as_secs_f64();
    println!("\nper epoch:  digit: train / val accuracy    big: train / val accuracy");
    for log in &history.epochs {
        let (digit, big) = (log.output("digit"), log.output("big"));
        let acc = |o: Option<&kiln::train::OutputLog>, val: bool| {
            o.and_then(|o| if val { o.val_accuracy } else { o.accuracy })
                .map_or("-".to_string(), |a| format!("{:.2} %", 100.0 * a))
        };
        println!(
            "epoch {:>3}:  {:>8} / {:>8}              {:>8} / {:>8}",
            log.epoch + 1,
            acc(digit, false),
            acc(digit, true),
            acc(big, false),
            acc(big, true)
        );
    }

    // 4. Score each head on the test set, and the heads against each other: the
    //    digit head's answer implies the big head's.
    let (digit, big) = score(&mut model, &test)?;
    let outputs = model.infer(test.features()).to_vec();
    let agree = outputs
        .chunks_exact(12)
        .filter(|row| {
            let argmax = |v: &[f32]| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
            (argmax(&row[..10]) > 4) == (argmax(&row[10..]) == 1)
        })
        .count();
    println!(
        "\n{} epochs in {seconds:.1} s; test: digit accuracy {:.2} % (loss {:.4}), greater than 4 accuracy {:.2} % (weighted loss {:.4}); the heads agree on {:.2} % of the test digits",
        history.epochs.len(),
        100.0 * digit.accuracy.unwrap_or(0.0),
        digit.loss,
        100.0 * big.accuracy.unwrap_or(0.0),
        big.loss,
        100.0 * agree as f64 / test.len() as f64
    );
    Ok(())
}
