//! The first deep-learning model: a 784 → 128 ReLU → 10 network on handwritten digits,
//! trained with Adam, then a classification report, training curves and a confusion
//! matrix.
//!
//! ```text
//! cargo run --release --example mnist_mlp                               # shipped 8x8 digits
//! cargo run --release --example mnist_mlp -- --data ../shared/data/mnist  # MNIST IDX files
//! ```
//!
//! The MNIST directory can also come from `KILN_MNIST_DIR`. With no MNIST, the same
//! network (with 64 inputs) trains on the UCI 8x8 digits in `data/`, which ship with
//! the project. Pictures and the best model go to `--out` (default
//! `target/mnist_mlp`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln::data::{read_csv, read_mnist, Dataset};
use kiln::plot::{confusion_heatmap, training_curves};
use kiln::prelude::*;
use kiln::train::predict_classes;

kiln::model! {
    /// The seed's network for 28x28 MNIST digits.
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

struct Args {
    data: Option<PathBuf>,
    epochs: Option<usize>,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        data: std::env::var_os("KILN_MNIST_DIR").map(PathBuf::from),
        epochs: None,
        out: PathBuf::from("target/mnist_mlp"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--data" => args.data = Some(PathBuf::from(value()?)),
            "--epochs" => {
                args.epochs = Some(value()?.parse().map_err(|e| format!("--epochs: {e}"))?)
            }
            "--out" => args.out = PathBuf::from(value()?),
            "--help" | "-h" => {
                return Err("usage: mnist_mlp [--data MNIST_DIR] [--epochs N] [--out DIR]".into())
            }
            other => return Err(format!("unknown argument {other}; try --help")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Err(error) = run(&args) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Error> {
    match &args.data {
        Some(dir) => {
            println!("MNIST from {}", dir.display());
            let (train, test) = read_mnist::<f32, Shape1<784>>(dir)?;
            train_and_report::<MnistMlp<f32>>(
                MnistMlp::new(0),
                train,
                test,
                args.epochs.unwrap_or(5),
                32,
                &args.out,
            )
        }
        None => {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
            println!(
                "no MNIST directory given (--data or KILN_MNIST_DIR): the 8x8 digits in {}",
                path.display()
            );
            let digits = read_csv::<f32, Shape1<64>>(&path, LabelColumn::Last, 1.0 / 16.0, 10)?;
            let (train, test) = digits.split(0.2, 42);
            train_and_report::<DigitsMlp<f32>>(
                DigitsMlp::new(0),
                train,
                test,
                args.epochs.unwrap_or(40),
                32,
                &args.out,
            )
        }
    }
}

fn train_and_report<M: Model<f32> + Send>(
    mut model: M,
    train: Dataset<f32, M::Input>,
    test: Dataset<f32, M::Input>,
    epochs: usize,
    batch_size: usize,
    out: &Path,
) -> Result<(), Error> {
    println!("{} training and {} test samples\n", train.len(), test.len());
    println!("{}\n", M::summary());
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, &e))?;
    let config = FitConfig::new(epochs, batch_size)
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

    let scored = model.evaluate(&test, &CrossEntropy::default(), 1000)?;
    let predictions = predict_classes(&mut model, test.features(), 1000);
    let matrix = ConfusionMatrix::new(&predictions, test.targets(), 10)?;
    println!(
        "\n{} epochs in {seconds:.1} s; test loss {:.4}, test accuracy {:.2} %\n",
        history.epochs.len(),
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
