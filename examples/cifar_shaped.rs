//! A CIFAR-10-shaped network — `[3, 32, 32]` colour images in, 10 classes out — with
//! batch norm, padded 3x3 convolutions and global average pooling.
//!
//! ```text
//! cargo run --release --example cifar_shaped                                 # shipped 8x8 digits
//! cargo run --release --example cifar_shaped -- --data ../shared/data/mnist  # MNIST IDX files
//! ```
//!
//! CIFAR-10 itself does not ship with kiln and nothing downloads at run time, so the
//! network trains on the digits it has, made CIFAR-shaped: each grey image is scaled
//! (8x8 digits, 4x nearest-neighbour) or padded (28x28 MNIST, 2 pixels a side) to
//! 32x32 and copied into three channels. Point it at CIFAR-10 data in the same layout
//! and nothing in the model changes.

mod common;

use kiln::data::{read_mnist, Dataset};
use kiln::prelude::*;

kiln::model! {
    /// A small VGG-style network for 32x32 colour images.
    pub struct CifarNet {
        input: [3, 32, 32],
        conv1: Conv2d(32, kernel = 3, padding = 1, bias = false), bn1: BatchNorm2d, Relu,
        conv2: Conv2d(32, kernel = 3, padding = 1), Relu,
        MaxPool2d(2),
        conv3: Conv2d(64, kernel = 3, padding = 1, bias = false), bn2: BatchNorm2d, Relu,
        MaxPool2d(2),
        conv4: Conv2d(64, kernel = 3, padding = 1), Relu,
        GlobalAvgPool,
        Dropout(0.2),
        fc: Dense(10),
    }
}

/// Grey `[1, side, side]` images to `[3, 32, 32]`: scaled by `32 / side` when that is a
/// whole number, else centred with zero padding.
fn to_rgb32<S: Shape>(data: &Dataset<f32, S>) -> Result<Dataset<f32, Shape3<3, 32, 32>>, Error> {
    let side = S::DIMS[1];
    let mut out = Vec::with_capacity(data.len() * 3 * 32 * 32);
    let mut plane = vec![0.0_f32; 32 * 32];
    for image in data.features().as_slice().chunks_exact(side * side) {
        if 32 % side == 0 {
            let scale = 32 / side;
            for (i, v) in plane.iter_mut().enumerate() {
                *v = image[(i / 32 / scale) * side + (i % 32) / scale];
            }
        } else {
            let pad = (32 - side) / 2;
            plane.fill(0.0);
            for (r, row) in image.chunks_exact(side).enumerate() {
                plane[(r + pad) * 32 + pad..][..side].copy_from_slice(row);
            }
        }
        for _ in 0..3 {
            out.extend_from_slice(&plane);
        }
    }
    Dataset::new(out, data.targets().to_vec(), data.classes())
}

fn main() {
    common::main_with("cifar_shaped", |args| {
        let (train, test) = match &args.data {
            Some(dir) => {
                println!("MNIST from {}, padded to [3, 32, 32]", dir.display());
                let (train, test) = read_mnist::<f32, Shape3<1, 28, 28>>(dir)?;
                (to_rgb32(&train)?, to_rgb32(&test)?)
            }
            None => {
                let (train, test) = common::shipped_digits::<Shape3<1, 8, 8>>()?;
                println!("scaled to [3, 32, 32]");
                (to_rgb32(&train)?, to_rgb32(&test)?)
            }
        };
        let epochs = args
            .epochs
            .unwrap_or(if args.data.is_some() { 2 } else { 15 });
        common::train_and_report(
            CifarNet::<f32>::new(0),
            train,
            test,
            epochs,
            32,
            true,
            &args.out,
        )
    });
}
