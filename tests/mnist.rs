//! The main scenario end to end: the seed's 784 → 128 ReLU → 10 network reaches at least
//! 97.5 % test accuracy on MNIST within 5 epochs.
//!
//! Set `KILN_MNIST_DIR` to a directory with the four MNIST IDX files (CI points it at
//! the shared copy and fails if it is missing). Without it, the same network with 64
//! inputs trains on the 8x8 digits that ship in `data/` and must reach 95 %.

use std::path::{Path, PathBuf};

use kiln::data::{read_csv, read_mnist};
use kiln::prelude::*;

kiln::model! {
    struct MnistMlp { input: [784], fc1: Dense(128), Relu, Dropout(0.2), fc2: Dense(10) }
}
kiln::model! {
    struct DigitsMlp { input: [64], fc1: Dense(128), Relu, Dropout(0.2), fc2: Dense(10) }
}

fn config(epochs: usize) -> FitConfig {
    FitConfig::new(epochs, 32)
        .seed(1)
        .validation_split(0.1)
        .early_stopping(EarlyStopping::new(Monitor::ValLoss, 3))
        .progress(Progress::Lines)
}

#[test]
fn mlp_reaches_its_accuracy() {
    match std::env::var_os("KILN_MNIST_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let (train, test) = read_mnist::<f32, Shape1<784>>(&dir).unwrap_or_else(|e| {
                panic!("KILN_MNIST_DIR is set but MNIST could not be read: {e}")
            });
            assert_eq!((train.len(), test.len()), (60_000, 10_000));
            let mut net = MnistMlp::<f32>::new(0);
            let history = net
                .fit(
                    &train,
                    None,
                    &CrossEntropy::default(),
                    &mut Adam::new(1e-3),
                    &config(5),
                )
                .unwrap();
            let scored = net.evaluate(&test, &CrossEntropy::default(), 1000).unwrap();
            let accuracy = scored.accuracy.unwrap();
            println!(
                "MNIST: {} epochs, test accuracy {:.4}",
                history.epochs.len(),
                accuracy
            );
            assert!(history.epochs.len() <= 5);
            assert!(accuracy >= 0.975, "MNIST test accuracy {accuracy}");
        }
        None => {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
            let digits =
                read_csv::<f32, Shape1<64>>(&path, LabelColumn::Last, 1.0 / 16.0, 10).unwrap();
            assert_eq!(digits.len(), 1797);
            let (train, test) = digits.split(0.2, 42);
            let mut net = DigitsMlp::<f32>::new(0);
            net.fit(
                &train,
                None,
                &CrossEntropy::default(),
                &mut Adam::new(1e-3),
                &config(40),
            )
            .unwrap();
            let accuracy = net
                .evaluate(&test, &CrossEntropy::default(), 1000)
                .unwrap()
                .accuracy
                .unwrap();
            println!("8x8 digits (KILN_MNIST_DIR not set): test accuracy {accuracy:.4}");
            assert!(accuracy >= 0.95, "digits test accuracy {accuracy}");
        }
    }
}
