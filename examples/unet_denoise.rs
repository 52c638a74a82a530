//! A small U-Net that removes Gaussian noise (σ = 0.5) from MNIST digits: two scales,
//! each skip connection concatenated with the upsampled coarser path, upsampling by
//! transposed convolutions.
//!
//! ```text
//! cargo run --release --example unet_denoise                      # ../shared/data/mnist
//! cargo run --release --example unet_denoise -- --data DIR --epochs 2 --train 10000 --out DIR
//! ```
//!
//! The training loop is written out: every batch gets fresh noise, so the network never
//! sees the same noisy digit twice. Prints the test PSNR of the noisy digits and of the
//! denoised ones, and writes `OUT/denoised.png`: rows of noisy, denoised and clean
//! digits.

use std::path::PathBuf;
use std::time::Instant;

use kiln::data::read_mnist;
use kiln::init::{init_rng, Init};
use kiln::plot::image_grid;
use kiln::prelude::*;

kiln::model! {
    /// Encoder 28x28 → 14x14 → 7x7 and back, with a skip at each scale.
    pub struct UNet {
        input: [1, 28, 28],
        enc: { Conv2d(16, kernel = 3, padding = 1), Relu, Conv2d(16, kernel = 3, padding = 1), Relu },
        level1: Concat {
            skip: {},
            down: {
                MaxPool2d(2),
                Conv2d(32, kernel = 3, padding = 1), Relu, Conv2d(32, kernel = 3, padding = 1), Relu,
                level2: Concat {
                    skip: {},
                    down: {
                        MaxPool2d(2),
                        Conv2d(64, kernel = 3, padding = 1), Relu,
                        up: ConvTranspose2d(32, kernel = 2, stride = 2), Relu,
                    },
                },
                Conv2d(32, kernel = 3, padding = 1), Relu,
                up: ConvTranspose2d(16, kernel = 2, stride = 2), Relu,
            },
        },
        dec: Conv2d(16, kernel = 3, padding = 1), Relu,
        out: Conv2d(1, kernel = 1), Sigmoid,
    }
}

const SIGMA: f64 = 0.5;
const PIXELS: usize = 28 * 28;

/// Adds `N(0, σ²)` noise to `clean`, writing `noisy`.
fn add_noise(noisy: &mut [f32], clean: &[f32], rng: &mut kiln::Rng) {
    Init::Normal { std: SIGMA }.fill(noisy, rng);
    for (n, &c) in noisy.iter_mut().zip(clean) {
        *n += c;
    }
}

/// Peak signal-to-noise ratio in dB of `images` against `clean`, for pixels in
/// `[0, 1]`: `10·log10(1 / MSE)`, the MSE taken over every pixel of the set.
fn psnr(images: &[f32], clean: &[f32]) -> f64 {
    let mse = images
        .iter()
        .zip(clean)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum::<f64>()
        / images.len() as f64;
    10.0 * (1.0 / mse).log10()
}

fn main() -> Result<(), kiln::Error> {
    let (data, epochs, train_count, out) = arguments();
    let (train, test) = read_mnist::<f32, Shape3<1, 28, 28>>(&data)?;
    let train_count = train_count.min(train.len());
    println!(
        "MNIST from {}: {train_count} of {} training and {} test digits, noise σ = {SIGMA}\n",
        data.display(),
        train.len(),
        test.len()
    );
    let mut net = UNet::<f32>::new(0);
    println!("{}\n", UNet::<f32>::summary());

    // The same noisy test set for every measurement.
    let clean_test = test.features().as_slice();
    let mut noisy_test = vec![0.0_f32; clean_test.len()];
    add_noise(&mut noisy_test, clean_test, &mut init_rng(7));

    let batch = 32;
    let clean_train = &train.features().as_slice()[..train_count * PIXELS];
    let mut noisy = vec![0.0_f32; batch * PIXELS];
    let mut order: Vec<usize> = (0..train_count).collect();
    let mut clean = vec![0.0_f32; batch * PIXELS];
    let mut rng = init_rng(1);
    let mut opt = Adam::new(1e-3);
    let loss = Mse::default();
    let started = Instant::now();
    for epoch in 0..epochs {
        // A Fisher-Yates shuffle from the same generator as the noise.
        for i in (1..order.len()).rev() {
            let j = (kiln::init::uniform(&mut rng) * (i + 1) as f64) as usize;
            order.swap(i, j);
        }
        let mut total = 0.0;
        let steps = train_count / batch;
        for step in 0..steps {
            for (k, &i) in order[step * batch..][..batch].iter().enumerate() {
                clean[k * PIXELS..][..PIXELS].copy_from_slice(&clean_train[i * PIXELS..][..PIXELS]);
            }
            add_noise(&mut noisy, &clean, &mut rng);
            let x = TensorRef::<f32, Shape3<1, 28, 28>>::new(&noisy)?;
            total += f64::from(net.train_step(x, &clean[..], &loss, &mut opt)?);
        }
        // Progress on the first thousand test digits; the full set at the end.
        let few = 1000 * PIXELS;
        let denoised = denoise(&mut net, &noisy_test[..few]);
        println!(
            "epoch {}: training MSE {:.5}, PSNR on 1000 test digits {:.2} dB ({:.0} s)",
            epoch + 1,
            total / steps as f64,
            psnr(&denoised, &clean_test[..few]),
            started.elapsed().as_secs_f64()
        );
    }
    let seconds = started.elapsed().as_secs_f64();

    let denoised = denoise(&mut net, &noisy_test);
    let (before, after) = (psnr(&noisy_test, clean_test), psnr(&denoised, clean_test));
    println!(
        "\ntrained {epochs} epochs in {seconds:.0} s; test PSNR: noisy {before:.2} dB, denoised {after:.2} dB ({:+.2} dB)",
        after - before
    );

    // Rows of eight: noisy, denoised, clean.
    let shown = 8;
    let mut grid = Vec::with_capacity(3 * shown * PIXELS);
    for images in [&noisy_test[..], &denoised[..], clean_test] {
        grid.extend_from_slice(&images[..shown * PIXELS]);
    }
    let path = image_grid(&grid, (28, 28), shown, 3, out.join("denoised.png"))?;
    println!("wrote {} (rows: noisy, denoised, clean)", path.display());
    Ok(())
}

/// The network's output for every image of `noisy`, in inference mode.
fn denoise(net: &mut UNet<f32>, noisy: &[f32]) -> Vec<f32> {
    let mut denoised = Vec::with_capacity(noisy.len());
    for chunk in noisy.chunks(500 * PIXELS) {
        let x = TensorRef::<f32, Shape3<1, 28, 28>>::new(chunk).expect("whole images");
        denoised.extend_from_slice(net.forward(x).as_slice());
    }
    denoised
}

/// `--data DIR` (default: the shared MNIST copy), `--epochs N` (default 2),
/// `--train N` training digits (default 10000), `--out DIR` (default
/// `target/unet_denoise`).
fn arguments() -> (PathBuf, usize, usize, PathBuf) {
    let mut data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    let (mut epochs, mut train) = (2, 10_000);
    let mut out = PathBuf::from("target/unet_denoise");
    let mut args = std::env::args().skip(1);
    let usage = || -> ! {
        eprintln!("usage: unet_denoise [--data DIR] [--epochs N] [--train N] [--out DIR]");
        std::process::exit(2);
    };
    while let Some(arg) = args.next() {
        let Some(value) = args.next() else { usage() };
        let count = || value.parse::<usize>().ok().filter(|&n| n > 0);
        match arg.as_str() {
            "--data" => data = PathBuf::from(&value),
            "--out" => out = PathBuf::from(&value),
            "--epochs" => epochs = count().unwrap_or_else(|| usage()),
            "--train" => train = count().unwrap_or_else(|| usage()),
            _ => usage(),
        }
    }
    (data, epochs, train, out)
}
