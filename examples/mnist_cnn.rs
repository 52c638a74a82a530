//! The seed's convolutional network on handwritten digits: Conv 32 3x3 ReLU, MaxPool 2,
//! Conv 64 3x3 ReLU, MaxPool 2, Flatten, Dense 128 ReLU, Dense 10, trained with Adam.
//!
//! ```text
//! cargo run --release --example mnist_cnn                                 # shipped 8x8 digits
//! cargo run --release --example mnist_cnn -- --data ../shared/data/mnist  # MNIST IDX files
//! ```
//!
//! On 28x28 MNIST the second pooling meets an 11x11 map: `floor = true` drops its last
//! row and column as PyTorch and Keras do silently (kiln asks for it: without it the
//! model does not compile). The 8x8 digits use padded convolutions so the same layers
//! fit.

mod common;

kiln::model! {
    /// The seed's CNN for 28x28 MNIST digits.
    pub struct MnistCnn {
        input: [1, 28, 28],
        conv1: Conv2d(32, kernel = 3), Relu,
        MaxPool2d(2),
        conv2: Conv2d(64, kernel = 3), Relu,
        MaxPool2d(2, floor = true),
        Flatten,
        fc1: Dense(128), Relu,
        fc2: Dense(10),
    }
}

kiln::model! {
    /// The same layers, padded, for the 8x8 digits that ship with kiln.
    pub struct DigitsCnn {
        input: [1, 8, 8],
        conv1: Conv2d(32, kernel = 3, padding = 1), Relu,
        MaxPool2d(2),
        conv2: Conv2d(64, kernel = 3, padding = 1), Relu,
        MaxPool2d(2),
        Flatten,
        fc1: Dense(128), Relu,
        fc2: Dense(10),
    }
}

fn main() {
    common::run_digits(
        "mnist_cnn",
        (
            MnistCnn::<f32>::new(0),
            common::Plan {
                epochs: 8,
                batch_size: 64,
            },
        ),
        (
            DigitsCnn::<f32>::new(0),
            common::Plan {
                epochs: 30,
                batch_size: 32,
            },
        ),
        true,
    );
}
