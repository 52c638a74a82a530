//! The first deep-learning model: a 784 → 128 ReLU → 10 network on handwritten digits,
//! trained with Adam, then a classification report, training curves and a confusion
//! matrix.
//!
//! ```text
//! cargo run --release --example mnist_mlp                                 # shipped 8x8 digits
//! cargo run --release --example mnist_mlp -- --data ../shared/data/mnist  # MNIST IDX files
//! ```
//!
//! The MNIST directory can also come from `KILN_MNIST_DIR`. With no MNIST, the same
//! network (with 64 inputs) trains on the UCI 8x8 digits in `data/`, which ship with
//! the project. Pictures and the best model go to `--out` (default
//! `target/mnist_mlp`). The listing reads top to bottom: load the data, declare the
//! network, fit it, evaluate it on the test set, report.

mod common;

use std::path::Path;
use std::time::Instant;

use kiln::data::Dataset;
use kiln::plot::{confusion_heatmap, training_curves};
use kiln::prelude::*;
use kiln::train::predict_classes;

kiln::model! {
    /// The network for 28x28 MNIST digits.
    pub struct MnistMlp {
        input: [784],
        fc1: Dense(128), Relu,
        Dropout(0.2),
        fc2: Dense(10),
    }
}

kiln::model! {
    /// The same network for the 8x8 digits that ship with kiln.
    pub struct DigitsMlp {
        input: [64],
        fc1: Dense(128), Relu,
        Dropout(0.2),
        fc2: Dense(10),
    }
}

fn main() {
    common::main_with("mnist_mlp", |args| {
        // 1. Load: MNIST's IDX files if a directory is given, else the shipped digits
        //    (scaled to [0, 1], 80/20 split with a fixed seed); 2. declare the network
        //    that fits them.
        match &args.data {
            Some(dir) => {
                println!("MNIST from {}", dir.display());
                let (train, test) = kiln::data::read_mnist::<f32, Shape1<784>>(dir)?;
                let model = MnistMlp::<f32>::new(0);
                fit_and_report(model, train, test, args.epochs.unwrap_or(5), &args.out)
            }
            None => {
                let (train, test) = common::shipped_digits::<Shape1<64>>()?;
                let model = DigitsMlp::<f32>::new(0);
                fit_and_report(model, train, test, args.epochs.unwrap_or(40), &args.out)
            }
        }
    });
}

fn fit_and_report<M: Model<f32> + Send>(
    mut model: M,
    train: Dataset<f32, M::Input>,
    test: Dataset<f32, M::Input>,
    epochs: usize,
    out: &Path,
) -> Result<(), Error> {
    println!("{} training and {} test samples\n", train.len(), test.len());
    println!("{}\n", M::summary());
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, &e))?;

    // 3. Fit: Adam, batches of 32, 10 % of the training set held out for validation,
    //    early stopping after 3 epochs without a better validation loss (keeping the
    //    best weights), and a checkpoint of the best model.
    let config = FitConfig::new(epochs, 32)
        .seed(1)
        .validation_split(0.1)
        .early_stopping(EarlyStopping::new(Monitor::ValLoss, 3))
        .checkpoint(out.join("best.safetensors"), Monitor::ValLoss);
    let started = Instant::now();
    let history = model.fit(
        &train,
        None,
        &CrossEntropy::default(),
        &mut Adam::new(1e-3),
        &config,
    )?;
    let seconds = started.elapsed().as_secs_f64();

    // 4. Evaluate on the test set, which training never saw.
    let scored = model.evaluate(&test, &CrossEntropy::default(), 1000)?;
    let predictions = predict_classes(&mut model, test.features(), 1000);
    let matrix = ConfusionMatrix::new(&predictions, test.targets(), 10)?;

    // 5. Report: accuracy, per-class precision and recall, curves, confusion matrix.
    println!(
        "\n{} epochs in {seconds:.1} s ({:.1} s per epoch); test loss {:.4}, test accuracy {:.2} %\n",
        history.epochs.len(),
        seconds / history.epochs.len().max(1) as f64,
        scored.loss,
        100.0 * scored.accuracy.unwrap_or(0.0)
    );
    println!("{}", matrix.report());
    let mut written = training_curves(&history, out.join("curves"))?;
    written.extend(confusion_heatmap(&matrix, None, out.join("confusion"))?);
    written.push(out.join("best.safetensors"));
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
