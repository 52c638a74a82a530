//! What the digit examples share: command-line arguments, and training with a report,
//! curves, a confusion matrix and a checkpoint.

// Each example compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln::data::Dataset;
use kiln::plot::{confusion_heatmap, training_curves};
use kiln::prelude::*;
use kiln::train::predict_classes;

/// `--data DIR` (or `KILN_MNIST_DIR`), `--epochs N`, `--out DIR`.
pub struct Args {
    pub data: Option<PathBuf>,
    pub epochs: Option<usize>,
    pub out: PathBuf,
}

/// Reads the arguments; `Err` holds the message to print (usage or what is wrong).
pub fn parse_args(name: &str) -> Result<Args, String> {
    let mut args = Args {
        data: std::env::var_os("KILN_MNIST_DIR").map(PathBuf::from),
        epochs: None,
        out: PathBuf::from("target").join(name),
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
                return Err(format!(
                    "usage: {name} [--data MNIST_DIR] [--epochs N] [--out DIR]"
                ))
            }
            other => return Err(format!("unknown argument {other}; try --help")),
        }
    }
    Ok(args)
}

/// Runs `run` with the parsed arguments and exits non-zero on any error.
pub fn main_with(name: &str, run: impl FnOnce(&Args) -> Result<(), Error>) {
    let args = match parse_args(name) {
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

/// The 8x8 digits that ship with kiln, split 80/20 with a fixed seed.
pub fn shipped_digits<S: Shape>() -> Result<kiln::data::TrainTest<f32, S>, Error> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
    println!(
        "no MNIST directory given (--data or KILN_MNIST_DIR): the 8x8 digits in {}",
        path.display()
    );
    let digits = kiln::data::read_csv::<f32, S>(&path, LabelColumn::Last, 1.0 / 16.0, 10)?;
    Ok(digits.split(0.2, 42))
}

/// Trains with Adam (on a cosine learning-rate schedule if `cosine`), a 10 % validation
/// split and early stopping, then prints the test
/// accuracy and classification report and writes curves, confusion matrix and the
/// best model to `out`.
pub fn train_and_report<M: Model<f32> + Send>(
    mut model: M,
    train: Dataset<f32, M::Input>,
    test: Dataset<f32, M::Input>,
    epochs: usize,
    batch_size: usize,
    cosine: bool,
    out: &Path,
) -> Result<(), Error> {
    println!("{} training and {} test samples\n", train.len(), test.len());
    println!("{}\n", M::summary());
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, &e))?;
    let mut config = FitConfig::new(epochs, batch_size)
        .seed(1)
        .validation_split(0.1)
        .early_stopping(EarlyStopping::new(Monitor::ValLoss, 3))
        .checkpoint(out.join("best.safetensors"), Monitor::ValLoss);
    if cosine {
        config = config.schedule(CosineAnnealing {
            t_max: epochs,
            eta_min: 0.0,
        });
    }
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

/// How one network of a digit example trains: its epochs and batch size.
pub struct Plan {
    pub epochs: usize,
    pub batch_size: usize,
}

/// The body of the digit examples: `mnist` trains on MNIST when a directory is given,
/// `digits` on the shipped 8x8 digits otherwise (`--epochs` overrides either plan).
pub fn run_digits<Big, Small>(name: &str, mnist: (Big, Plan), digits: (Small, Plan), cosine: bool)
where
    Big: Model<f32> + Send,
    Small: Model<f32> + Send,
{
    main_with(name, |args| match &args.data {
        Some(dir) => {
            println!("MNIST from {}", dir.display());
            let (train, test) = kiln::data::read_mnist::<f32, Big::Input>(dir)?;
            let (model, plan) = mnist;
            let epochs = args.epochs.unwrap_or(plan.epochs);
            train_and_report(
                model,
                train,
                test,
                epochs,
                plan.batch_size,
                cosine,
                &args.out,
            )
        }
        None => {
            let (train, test) = shipped_digits::<Small::Input>()?;
            let (model, plan) = digits;
            let epochs = args.epochs.unwrap_or(plan.epochs);
            train_and_report(
                model,
                train,
                test,
                epochs,
                plan.batch_size,
                cosine,
                &args.out,
            )
        }
    });
}
