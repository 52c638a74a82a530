//! A GAN on MNIST (DCGAN-style): the generator learns through its discriminator's
//! gradient with respect to the input.
//!
//! ```text
//! cargo run --release --example gan_mnist                         # ../shared/data/mnist
//! cargo run --release --example gan_mnist -- --data DIR --epochs 5 --out DIR
//! ```
//!
//! Each step trains the discriminator on a batch of real digits (label 1) and of the
//! generator's samples (label 0), then the generator: its samples go through the
//! discriminator, whose `value_and_grad_to_input` gives dL/d(sample) for the loss of
//! calling them real, and that drives the generator's `backward` and
//! `apply_gradients`.
//!
//! Afterwards a CNN classifier, trained here on MNIST, reads 1,000 generated digits:
//! the example prints the share it classifies with confidence ≥ 0.9 and how many of the
//! ten classes appear, and writes `OUT/samples.png`, a grid of 64 samples.

use std::path::PathBuf;
use std::time::Instant;

use kiln::data::read_mnist;
use kiln::init::{init_rng, Init};
use kiln::plot::image_grid;
use kiln::prelude::*;

/// Length of the noise vector the generator starts from.
const LATENT: usize = 32;
const PIXELS: usize = 28 * 28;

kiln::model! {
    /// Noise `[32, 1, 1]` → 7x7 → 14x14 → 28x28 by transposed convolutions.
    pub struct Generator {
        input: [32, 1, 1],
        project: ConvTranspose2d(64, kernel = 7), bn0: BatchNorm2d, Relu,
        up1: ConvTranspose2d(32, kernel = 4, stride = 2, padding = 1), bn1: BatchNorm2d, Relu,
        up2: ConvTranspose2d(1, kernel = 4, stride = 2, padding = 1), Sigmoid,
    }
}

kiln::model! {
    /// A digit → the logit of its being real.
    pub struct Discriminator {
        input: [1, 28, 28],
        conv1: Conv2d(32, kernel = 4, stride = 2, padding = 1), LeakyRelu(0.2),
        conv2: Conv2d(64, kernel = 4, stride = 2, padding = 1), LeakyRelu(0.2),
        Flatten,
        fc: Dense(1),
    }
}

kiln::model! {
    /// The judge: a small CNN digit classifier.
    pub struct Classifier {
        input: [1, 28, 28],
        conv1: Conv2d(16, kernel = 5, padding = 2), Relu, MaxPool2d(2),
        conv2: Conv2d(32, kernel = 5, padding = 2), Relu, MaxPool2d(2),
        Flatten,
        fc1: Dense(128), Relu,
        fc2: Dense(10),
    }
}

fn main() -> Result<(), kiln::Error> {
    let (data, epochs, out) = arguments();
    let (train, test) = read_mnist::<f32, Shape3<1, 28, 28>>(&data)?;
    println!(
        "MNIST from {}: {} training digits\n",
        data.display(),
        train.len()
    );
    let mut generator = Generator::<f32>::new(0);
    let mut critic = Discriminator::<f32>::new(1);
    println!("{}\n", Generator::<f32>::summary());
    println!("{}\n", Discriminator::<f32>::summary());

    let batch = 64;
    // DCGAN's optimiser: Adam at 2e-4 with β1 = 0.5.
    let mut opt_g = Adam::new(2e-4).betas(0.5, 0.999);
    let mut opt_d = Adam::new(2e-4).betas(0.5, 0.999);
    let bce = BceWithLogits::default();
    let mut rng = init_rng(2);
    let mut noise = vec![0.0_f32; batch * LATENT];
    // Real digits, then generated ones, with their labels (real ones slightly
    // below 1: one-sided label smoothing).
    let mut pair = vec![0.0_f32; 2 * batch * PIXELS];
    let labels: Vec<f32> = (0..2 * batch)
        .map(|i| if i < batch { 0.9 } else { 0.0 })
        .collect();
    let all_real = vec![1.0_f32; batch];
    let real = train.features().as_slice();
    let steps = train.len() / batch;
    let started = Instant::now();
    for epoch in 0..epochs {
        let (mut loss_d, mut loss_g) = (0.0, 0.0);
        for step in 0..steps {
            // The discriminator: real digits in order, fresh samples.
            pair[..batch * PIXELS]
                .copy_from_slice(&real[step * batch * PIXELS..][..batch * PIXELS]);
            Init::Normal { std: 1.0 }.fill(&mut noise, &mut rng);
            let z = TensorRef::<f32, Shape3<LATENT, 1, 1>>::new(&noise)?;
            let fake = generator.forward_train(z);
            pair[batch * PIXELS..].copy_from_slice(fake);
            let x = TensorRef::<f32, Shape3<1, 28, 28>>::new(&pair)?;
            loss_d += f64::from(critic.train_step(x, &labels[..], &bce, &mut opt_d)?);

            // The generator: the same samples, judged by the updated discriminator,
            // with the loss of their being called real.
            let fake = TensorRef::<f32, Shape3<1, 28, 28>>::new(&pair[batch * PIXELS..])?;
            let (loss, grad_fake) = critic.value_and_grad_to_input(fake, &all_real[..], &bce)?;
            loss_g += f64::from(loss);
            generator.backward(grad_fake)?;
            generator.apply_gradients(&mut opt_g)?;
        }
        println!(
            "epoch {}: discriminator loss {:.3}, generator loss {:.3} ({:.0} s)",
            epoch + 1,
            loss_d / steps as f64,
            loss_g / steps as f64,
            started.elapsed().as_secs_f64()
        );
    }
    let gan_seconds = started.elapsed().as_secs_f64();

    // 1,000 samples in inference mode (batch norm's running statistics).
    let count = 1000;
    let mut z = vec![0.0_f32; count * LATENT];
    Init::Normal { std: 1.0 }.fill(&mut z, &mut init_rng(3));
    let samples = generator.forward(TensorRef::<f32, Shape3<LATENT, 1, 1>>::new(&z)?);
    let samples = samples.as_slice();
    let path = image_grid(
        &samples[..64 * PIXELS],
        (28, 28),
        8,
        3,
        out.join("samples.png"),
    )?;
    println!(
        "\nGAN trained {epochs} epochs in {gan_seconds:.0} s; wrote {}",
        path.display()
    );

    // The judge.
    let started = Instant::now();
    let mut judge = Classifier::<f32>::new(4);
    let config = FitConfig::new(2, 64).seed(5).progress(Progress::Silent);
    judge.fit(
        &train,
        None,
        &CrossEntropy::default(),
        &mut Adam::new(1e-3),
        &config,
    )?;
    let accuracy = judge
        .evaluate(&test, &CrossEntropy::default(), 1000)?
        .accuracy
        .unwrap_or(0.0);
    println!(
        "classifier: {:.2} % test accuracy on MNIST (trained in {:.0} s)",
        100.0 * accuracy,
        started.elapsed().as_secs_f64()
    );
    let logits = judge.forward(TensorRef::<f32, Shape3<1, 28, 28>>::new(samples)?);
    let mut confident = 0;
    let mut classes = [0_usize; 10];
    for row in logits.as_slice().chunks_exact(10) {
        // Softmax probability of the most likely class.
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let total: f32 = row.iter().map(|&v| (v - max).exp()).sum();
        let (class, _) = row
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            });
        if 1.0 / total >= 0.9 {
            confident += 1;
            classes[class] += 1;
        }
    }
    let present = classes.iter().filter(|&&n| n > 0).count();
    println!(
        "of {count} generated digits, {:.1} % are classified with confidence ≥ 0.9; {present} of the 10 classes appear among them",
        100.0 * confident as f64 / count as f64
    );
    println!("confident samples per class: {classes:?}");
    Ok(())
}

/// `--data DIR` (default: the shared MNIST copy), `--epochs N` (default 5), `--out DIR`
/// (default `target/gan_mnist`).
fn arguments() -> (PathBuf, usize, PathBuf) {
    let mut data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    let mut epochs = 5;
    let mut out = PathBuf::from("target/gan_mnist");
    let mut args = std::env::args().skip(1);
    let usage = || -> ! {
        eprintln!("usage: gan_mnist [--data DIR] [--epochs N] [--out DIR]");
        std::process::exit(2);
    };
    while let Some(arg) = args.next() {
        let Some(value) = args.next() else { usage() };
        match arg.as_str() {
            "--data" => data = PathBuf::from(&value),
            "--out" => out = PathBuf::from(&value),
            "--epochs" => {
                epochs = value
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n > 0)
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    (data, epochs, out)
}
