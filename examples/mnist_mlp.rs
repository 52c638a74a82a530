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
//! `target/mnist_mlp`).

mod common;

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

fn main() {
    common::run_digits(
        "mnist_mlp",
        (
            MnistMlp::<f32>::new(0),
            common::Plan {
                epochs: 5,
                batch_size: 32,
            },
        ),
        (
            DigitsMlp::<f32>::new(0),
            common::Plan {
                epochs: 40,
                batch_size: 32,
            },
        ),
        false,
    );
}
