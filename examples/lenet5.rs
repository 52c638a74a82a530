//! LeNet-5 (LeCun et al., 1998) with ReLU and max pooling, as DESIGN's example writes
//! it: two 5x5 convolutions, three dense layers and dropout.
//!
//! ```text
//! cargo run --release --example lenet5                                 # shipped 8x8 digits
//! cargo run --release --example lenet5 -- --data ../shared/data/mnist  # MNIST IDX files
//! ```
//!
//! The 8x8 digits are too small for two 5x5 convolutions with pooling between them:
//! kiln would reject that at compile time (`kernel 5x5 does not fit input [6, 4, 4]`),
//! so the digits variant uses 3x3 kernels.

mod common;

kiln::model! {
    /// LeNet-5 for 28x28 digits.
    pub struct LeNet {
        input: [1, 28, 28],
        conv1: Conv2d(6, kernel = 5, padding = 2), Relu,
        MaxPool2d(2),
        conv2: Conv2d(16, kernel = 5), Relu,
        MaxPool2d(2),
        Flatten,
        fc1: Dense(120), Relu,
        Dropout(0.1),
        fc2: Dense(84), Relu,
        fc3: Dense(10),
    }
}

kiln::model! {
    /// LeNet-5's layout with 3x3 kernels for 8x8 digits.
    pub struct LeNetDigits {
        input: [1, 8, 8],
        conv1: Conv2d(6, kernel = 3, padding = 1), Relu,
        MaxPool2d(2),
        conv2: Conv2d(16, kernel = 3, padding = 1), Relu,
        MaxPool2d(2),
        Flatten,
        fc1: Dense(120), Relu,
        Dropout(0.1),
        fc2: Dense(84), Relu,
        fc3: Dense(10),
    }
}

fn main() {
    common::run_digits(
        "lenet5",
        (
            LeNet::<f32>::new(0),
            common::Plan {
                epochs: 5,
                batch_size: 64,
            },
        ),
        (
            LeNetDigits::<f32>::new(0),
            common::Plan {
                epochs: 40,
                batch_size: 32,
            },
        ),
        true,
    );
}
