//! A small ResNet on MNIST: basic blocks with batch norm, defined once and used by
//! name, and a downsampling block whose shortcut projects with a strided 1x1
//! convolution because the shape changes.
//!
//! ```text
//! cargo run --release --example resnet_mnist                       # ../shared/data/mnist
//! cargo run --release --example resnet_mnist -- --data DIR --epochs 8
//! ```
//!
//! Parameters are named as torchvision names a ResNet's (`layer1.0.block.main.0.weight`,
//! `down.shortcut.1.running_var`), so the checkpoint it writes
//! (`target/resnet_mnist/best.safetensors`) reads in PyTorch as a state dict.

use std::path::PathBuf;
use std::time::Instant;

use kiln::data::read_mnist;
use kiln::prelude::*;
use kiln::train::predict_classes;

kiln::model! {
    /// A basic block with an identity shortcut, as torchvision's `BasicBlock`.
    block Basic(channels) {
        Residual {
            conv1: Conv2d(channels, kernel = 3, padding = 1, bias = false), bn1: BatchNorm2d, Relu,
            conv2: Conv2d(channels, kernel = 3, padding = 1, bias = false), bn2: BatchNorm2d,
        },
        Relu,
    }
    /// A basic block that halves the size and changes the width: its shortcut projects.
    block Down(channels) {
        Add {
            main: {
                Conv2d(channels, kernel = 3, stride = 2, padding = 1, bias = false), BatchNorm2d, Relu,
                Conv2d(channels, kernel = 3, padding = 1, bias = false), BatchNorm2d,
            },
            shortcut: { Conv2d(channels, kernel = 1, stride = 2, bias = false), BatchNorm2d },
        },
        Relu,
    }
    /// 28x28 → 14x14 → 7x7, 16 → 32 channels, then global average pooling.
    pub struct ResNet {
        input: [1, 28, 28],
        stem: Conv2d(16, kernel = 3, padding = 1, bias = false), bn: BatchNorm2d, Relu,
        MaxPool2d(2),
        layer1: { Basic(16), Basic(16) },
        layer2: { Down(32), Basic(32) },
        GlobalAvgPool,
        fc: Dense(10),
    }
}

fn main() -> Result<(), kiln::Error> {
    let (data, epochs) = arguments();
    let (train, test) = read_mnist::<f32, Shape3<1, 28, 28>>(&data)?;
    println!(
        "MNIST from {}: {} training and {} test digits\n",
        data.display(),
        train.len(),
        test.len()
    );
    let mut net = ResNet::<f32>::new(0);
    println!("{}\n", ResNet::<f32>::summary());

    let out = PathBuf::from("target/resnet_mnist");
    let config = FitConfig::new(epochs, 64)
        .seed(1)
        .validation_split(0.05)
        .checkpoint(out.join("best.safetensors"), Monitor::ValLoss)
        .schedule(CosineAnnealing {
            t_max: epochs,
            eta_min: 0.0,
        });
    let started = Instant::now();
    let history = net.fit(
        &train,
        None,
        &CrossEntropy::default(),
        &mut Adam::new(2e-3),
        &config,
    )?;
    let seconds = started.elapsed().as_secs_f64();

    let scored = net.evaluate(&test, &CrossEntropy::default(), 1000)?;
    let predictions = predict_classes(&mut net, test.features(), 1000);
    let matrix = ConfusionMatrix::new(&predictions, test.targets(), 10)?;
    println!(
        "\n{} epochs in {seconds:.0} s ({:.0} s per epoch); test loss {:.4}, test accuracy {:.2} %\n",
        history.epochs.len(),
        seconds / history.epochs.len().max(1) as f64,
        scored.loss,
        100.0 * scored.accuracy.unwrap_or(0.0)
    );
    println!("{}", matrix.report());
    println!("wrote {}", out.join("best.safetensors").display());
    Ok(())
}

/// `--data DIR` (default: the shared MNIST copy) and `--epochs N` (default 8).
fn arguments() -> (PathBuf, usize) {
    let mut data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    let mut epochs = 8;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().as_deref()) {
            ("--data", Some(dir)) => data = PathBuf::from(dir),
            ("--epochs", Some(n)) if n.parse::<usize>().is_ok_and(|n| n > 0) => {
                epochs = n.parse().unwrap_or(epochs)
            }
            _ => {
                eprintln!("usage: resnet_mnist [--data DIR] [--epochs N]");
                std::process::exit(2);
            }
        }
    }
    (data, epochs)
}
