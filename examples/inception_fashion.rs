//! An Inception-style network on Fashion-MNIST: four parallel branches (1x1, 3x3 and
//! 5x5 convolutions and a pooled 1x1) over the same feature map, concatenated along
//! the channels.
//!
//! ```text
//! cargo run --release --example inception_fashion                       # ../shared/data
//! cargo run --release --example inception_fashion -- --data DIR --epochs 12
//! ```
//!
//! `DIR` holds Fashion-MNIST's four IDX files (`.gz` or raw); by default the copy in
//! `shared/data/fashion-mnist` beside the repository.

use std::path::PathBuf;
use std::time::Instant;

use kiln::data::read_mnist;
use kiln::prelude::*;
use kiln::train::predict_classes;

kiln::model! {
    /// A stem, one Inception block and a dense head for 28x28 clothing images.
    pub struct InceptionNet {
        input: [1, 28, 28],
        stem: Conv2d(32, kernel = 3, padding = 1), bn0: BatchNorm2d, Relu,
        MaxPool2d(2),
        mixed: Concat {
            b1: { Conv2d(16, kernel = 1), Relu },
            b3: { Conv2d(16, kernel = 1), Relu, Conv2d(32, kernel = 3, padding = 1), Relu },
            b5: { Conv2d(8, kernel = 1), Relu, Conv2d(16, kernel = 5, padding = 2), Relu },
            pool: { MaxPool2d(3, stride = 1, padding = 1), Conv2d(16, kernel = 1), Relu },
        },
        bn1: BatchNorm2d,
        MaxPool2d(2),
        Flatten,
        Dropout(0.3),
        fc1: Dense(128), Relu,
        Dropout(0.3),
        fc2: Dense(10),
    }
}

const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

fn main() -> Result<(), kiln::Error> {
    let (data, epochs) = arguments();
    let (train, test) = read_mnist::<f32, Shape3<1, 28, 28>>(&data)?;
    println!(
        "Fashion-MNIST from {}: {} training and {} test images\n",
        data.display(),
        train.len(),
        test.len()
    );

    let mut net = InceptionNet::<f32>::new(0);
    println!("{}\n", InceptionNet::<f32>::summary());

    let config = FitConfig::new(epochs, 64)
        .seed(1)
        .validation_split(0.1)
        .schedule(CosineAnnealing {
            t_max: epochs,
            eta_min: 0.0,
        });
    let started = Instant::now();
    let history = net.fit(
        &train,
        None,
        &CrossEntropy::default(),
        &mut Adam::new(1e-3),
        &config,
    )?;
    let seconds = started.elapsed().as_secs_f64();

    let scored = net.evaluate(&test, &CrossEntropy::default(), 1000)?;
    let predictions = predict_classes(&mut net, test.features(), 1000);
    let matrix = ConfusionMatrix::new(&predictions, test.targets(), 10)?;
    println!(
        "\n{} epochs in {seconds:.0} s ({:.1} s per epoch); test loss {:.4}, test accuracy {:.2} %\n",
        history.epochs.len(),
        seconds / history.epochs.len().max(1) as f64,
        scored.loss,
        100.0 * scored.accuracy.unwrap_or(0.0)
    );
    println!("{}", matrix.report());
    for (class, name) in CLASSES.iter().enumerate() {
        println!("class {class}: {name}");
    }
    Ok(())
}

/// `--data DIR` (default: the shared Fashion-MNIST copy) and `--epochs N` (default 12).
fn arguments() -> (PathBuf, usize) {
    let mut data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/fashion-mnist");
    let mut epochs = 12;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--data", Some(dir)) => data = PathBuf::from(dir),
            ("--epochs", Some(n)) if n.parse::<usize>().is_ok_and(|n| n > 0) => {
                epochs = n.parse().unwrap_or(epochs)
            }
            _ => {
                eprintln!("usage: inception_fashion [--data DIR] [--epochs N]");
                std::process::exit(2);
            }
        }
    }
    (data, epochs)
}
