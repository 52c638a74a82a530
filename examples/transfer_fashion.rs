//! Transfer learning: a CNN pre-trained on MNIST digits, its convolutions frozen and a
//! new head fine-tuned on 1,000 Fashion-MNIST images, against the same network
//! trained from scratch on those 1,000 images.
//!
//! ```text
//! cargo run --release --example transfer_fashion              # ../shared/data
//! cargo run --release --example transfer_fashion -- --data DIR --pretrain-epochs 2
//! ```
//!
//! `DIR` holds `mnist/` and `fashion-mnist/` with their four IDX files each (`.gz` or
//! raw); by default the copies in `shared/data` beside the repository. The pre-trained
//! model is saved with `save` and loaded back with `load_with` (not strict: the new
//! head is missing from the file and the old one is left out), as a checkpoint from
//! another program would be.

use std::path::PathBuf;
use std::time::Instant;

use kiln::data::read_mnist;
use kiln::prelude::*;

kiln::model! {
    /// The digit classifier: two convolution stages and a 10-way head.
    pub struct DigitNet {
        input: [1, 28, 28],
        conv1: Conv2d(16, kernel = 3, padding = 1), Relu, MaxPool2d(2),
        conv2: Conv2d(32, kernel = 3, padding = 1), Relu, MaxPool2d(2),
        Flatten,
        fc: Dense(10),
    }
}

kiln::model! {
    /// The same convolutions under a new head for the ten kinds of clothing.
    pub struct ClothesNet {
        input: [1, 28, 28],
        conv1: Conv2d(16, kernel = 3, padding = 1), Relu, MaxPool2d(2),
        conv2: Conv2d(32, kernel = 3, padding = 1), Relu, MaxPool2d(2),
        Flatten,
        Dropout(0.3),
        head: Dense(10),
    }
}

/// Fine-tuning images, and epochs over them.
const FEW: usize = 1000;
const FINE_TUNE_EPOCHS: usize = 30;

fn main() -> Result<(), kiln::Error> {
    let (data, pretrain_epochs) = arguments();
    let (digits, _) = read_mnist::<f32, Shape3<1, 28, 28>>(&data.join("mnist"))?;
    let (clothes, clothes_test) =
        read_mnist::<f32, Shape3<1, 28, 28>>(&data.join("fashion-mnist"))?;
    // 1,000 clothing images drawn from the training set, 100 of each class.
    let few = clothes.subset(&first_per_class(clothes.targets(), FEW / 10));
    println!(
        "MNIST: {} digits to pre-train on; Fashion-MNIST: {} images to fine-tune on, {} to test\n",
        digits.len(),
        few.len(),
        clothes_test.len()
    );

    // 1. Pre-train on digits and save, as another program would have.
    let started = Instant::now();
    let mut digit_net = DigitNet::<f32>::new(0);
    let config = FitConfig::new(pretrain_epochs, 64).seed(1);
    digit_net.fit(
        &digits,
        None,
        &CrossEntropy::default(),
        &mut Adam::new(1e-3),
        &config,
    )?;
    let pretrain_seconds = started.elapsed().as_secs_f64();
    let checkpoint =
        std::env::temp_dir().join(format!("kiln-digits-{}.safetensors", std::process::id()));
    digit_net.save(&checkpoint)?;
    println!("pre-trained on MNIST in {pretrain_seconds:.0} s\n");

    // 2. Fine-tune: the convolutions from the checkpoint, frozen; only the head trains.
    let started = Instant::now();
    let mut tuned = ClothesNet::<f32>::new(1);
    let report = tuned.load_with(&checkpoint, &LoadOptions::new().strict(false))?;
    std::fs::remove_file(&checkpoint).ok();
    println!(
        "loaded {:?}\n  kept fresh: {:?}\n  left out: {:?}",
        report.loaded, report.missing, report.unexpected
    );
    let frozen = tuned.freeze("conv1")? + tuned.freeze("conv2")?;
    println!("froze {frozen} tensors; training the head only\n");
    let fine_tune = FitConfig::new(FINE_TUNE_EPOCHS, 32).seed(2);
    tuned.fit(
        &few,
        None,
        &CrossEntropy::default(),
        &mut Adam::new(1e-3),
        &fine_tune,
    )?;
    let tune_seconds = started.elapsed().as_secs_f64();
    let tuned_score = tuned.evaluate(&clothes_test, &CrossEntropy::default(), 1000)?;

    // 3. The same network from scratch on the same 1,000 images, every layer training.
    let started = Instant::now();
    let mut scratch = ClothesNet::<f32>::new(1);
    scratch.fit(
        &few,
        None,
        &CrossEntropy::default(),
        &mut Adam::new(1e-3),
        &fine_tune,
    )?;
    let scratch_seconds = started.elapsed().as_secs_f64();
    let scratch_score = scratch.evaluate(&clothes_test, &CrossEntropy::default(), 1000)?;

    let percent = |e: kiln::train::Evaluation| 100.0 * e.accuracy.unwrap_or(0.0);
    println!(
        "\nFashion-MNIST test accuracy after {FINE_TUNE_EPOCHS} epochs on {FEW} images:\n  \
         pre-trained on digits, convolutions frozen: {:.2} % ({tune_seconds:.1} s, + {pretrain_seconds:.0} s pre-training)\n  \
         from scratch, every layer training:         {:.2} % ({scratch_seconds:.1} s)",
        percent(tuned_score),
        percent(scratch_score),
    );
    Ok(())
}

/// The indices of the first `per_class` samples of each of the ten classes.
fn first_per_class(labels: &[usize], per_class: usize) -> Vec<usize> {
    let mut counts = [0usize; 10];
    let mut chosen = Vec::new();
    for (i, &label) in labels.iter().enumerate() {
        if counts[label] < per_class {
            counts[label] += 1;
            chosen.push(i);
        }
    }
    chosen
}

/// `--data DIR` (default: the shared copy) and `--pretrain-epochs N` (default 1).
fn arguments() -> (PathBuf, usize) {
    let mut data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    let mut epochs = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--data", Some(dir)) => data = PathBuf::from(dir),
            ("--pretrain-epochs", Some(n)) if n.parse::<usize>().is_ok_and(|n| n > 0) => {
                epochs = n.parse().unwrap_or(epochs)
            }
            _ => {
                eprintln!("usage: transfer_fashion [--data DIR] [--pretrain-epochs N]");
                std::process::exit(2);
            }
        }
    }
    (data, epochs)
}
