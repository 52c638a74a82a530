//! Where the benchmark CNN's training step goes: each runtime kernel of T3 (`cnn` in
//! `BENCHMARKS.md`) timed alone at batch 64 on rayon's pool, as `fit` runs them.
//!
//! ```text
//! cargo bench --bench cnn_kernels
//! ```
//!
//! Prints the minimum and the median of 200 timed calls per kernel (after a warm-up)
//! and their sums. The inputs are synthetic; the kernels' costs do not depend on
//! the values, except that pooling's gradient is sparse, as in training. The
//! convolutions' backward kernels overwrite some of their inputs, so each of their
//! calls restores them first; that copy is timed on its own and subtracted.

use std::time::Instant;

use kiln_runtime::layers::{
    conv2d_backward, conv2d_forward, dense_backward, dense_forward, max_pool2d_backward,
    max_pool2d_forward, Accum, Activation, Conv2dShape,
};
use kiln_runtime::{Adam, Optimizer};

/// A square convolution or pooling geometry without padding.
fn shape(c_in: usize, size: usize, c_out: usize, kernel: usize, stride: usize) -> Conv2dShape {
    let out = (size - kernel) / stride + 1;
    Conv2dShape {
        in_channels: c_in,
        in_size: (size, size),
        out_channels: c_out,
        kernel: (kernel, kernel),
        stride: (stride, stride),
        padding: (0, 0),
        dilation: (1, 1),
        out_size: (out, out),
    }
}

/// Minimum and median microseconds of 200 calls, after at least 20 calls and 100 ms
/// of warm-up (the pool's threads awake, the caches in their steady state).
fn measure(mut f: impl FnMut()) -> (f64, f64) {
    let start = Instant::now();
    let mut calls = 0;
    while calls < 20 || start.elapsed().as_secs_f64() < 0.1 {
        f();
        calls += 1;
    }
    let mut us: Vec<f64> = (0..200)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    us.sort_by(f64::total_cmp);
    (us[0], us[100])
}

/// Prints a row of the table.
fn row(name: &str, (min, median): (f64, f64)) -> (f64, f64) {
    println!("{name:<26} {min:>9.1} {median:>9.1}");
    (min, median)
}

/// Measures and prints `f`.
fn time(name: &str, f: impl FnMut()) -> (f64, f64) {
    row(name, measure(f))
}

/// Measures `f(true)`, which restores the kernel's inputs and runs it, and prints it
/// less `f(false)`, which only restores them.
fn time_restoring(name: &str, mut f: impl FnMut(bool)) -> (f64, f64) {
    let restore = measure(|| f(false));
    let total = measure(|| f(true));
    row(name, (total.0 - restore.0, total.1 - restore.1))
}

/// `n` values in [-0.3, 0.7).
fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.3)
        .collect()
}

fn main() {
    rayon::scope(|_| run(64));
}

fn run(b: usize) {
    let conv1 = shape(1, 28, 32, 3, 1);
    let pool1 = shape(32, 26, 32, 2, 2);
    let conv2 = shape(32, 13, 64, 3, 1);
    let pool2 = shape(64, 11, 64, 2, 2); // floor: 11 -> 5
    let x = values(b * conv1.input_len());
    let (w1, b1, w2, b2) = (values(32 * 9), values(32), values(64 * 288), values(64));
    let (w3, b3, w4, b4) = (
        values(128 * 1600),
        values(128),
        values(10 * 128),
        values(10),
    );
    let mut y1 = vec![0.0; b * conv1.output_len()];
    let mut cols1 = vec![0.0; conv1.cols_buffer_len(b)];
    let (mut p1, mut arg1) = (
        vec![0.0; b * pool1.output_len()],
        vec![0.0; b * pool1.output_len()],
    );
    let mut y2 = vec![0.0; b * conv2.output_len()];
    let mut cols2 = vec![0.0; conv2.cols_buffer_len(b)];
    let (mut p2, mut arg2) = (
        vec![0.0; b * pool2.output_len()],
        vec![0.0; b * pool2.output_len()],
    );
    let (mut h, mut o) = (vec![0.0; b * 128], vec![0.0; b * 10]);
    println!(
        "{:<26} {:>9} {:>9}",
        "kernel (batch 64)", "min µs", "median µs"
    );
    let mut sum = (0.0, 0.0);
    let mut add = |t: (f64, f64)| {
        sum.0 += t.0;
        sum.1 += t.1;
    };
    let relu = Activation::Relu;
    add(time("conv1 forward", || {
        conv2d_forward(&conv1, &mut y1, &mut cols1, &x, &w1, Some(&b1), relu, b)
    }));
    add(time("pool1 forward", || {
        max_pool2d_forward(&pool1, &mut p1, &mut arg1, &y1, b)
    }));
    add(time("conv2 forward", || {
        conv2d_forward(&conv2, &mut y2, &mut cols2, &p1, &w2, Some(&b2), relu, b)
    }));
    add(time("pool2 forward", || {
        max_pool2d_forward(&pool2, &mut p2, &mut arg2, &y2, b)
    }));
    add(time("fc1 forward", || {
        dense_forward::<f32, 1600, 128>(&mut h, &p2, &w3, Some(&b3), relu, b)
    }));
    add(time("fc2 forward", || {
        dense_forward::<f32, 128, 10>(&mut o, &h, &w4, Some(&b4), Activation::Identity, b)
    }));
    let grad_o = values(o.len());
    let (mut gw4, mut gb4, mut gh) = (vec![0.0; w4.len()], vec![0.0; 10], vec![0.0; h.len()]);
    let mut scratch_o = grad_o.clone();
    add(time("fc2 backward", || {
        scratch_o.copy_from_slice(&grad_o);
        let gi = Some((gh.as_mut_slice(), Accum::Replace));
        dense_backward::<f32, 128, 10>(
            gi,
            &mut gw4,
            Some(&mut gb4),
            &h,
            &w4,
            &o,
            &mut scratch_o,
            Activation::Identity,
            b,
        )
    }));
    let (mut gw3, mut gb3, mut gp2) = (vec![0.0; w3.len()], vec![0.0; 128], vec![0.0; p2.len()]);
    let mut scratch_h = gh.clone();
    add(time("fc1 backward", || {
        scratch_h.copy_from_slice(&gh);
        let gi = Some((gp2.as_mut_slice(), Accum::Replace));
        dense_backward::<f32, 1600, 128>(
            gi,
            &mut gw3,
            Some(&mut gb3),
            &p2,
            &w3,
            &h,
            &mut scratch_h,
            relu,
            b,
        )
    }));
    let mut gy2 = vec![0.0; y2.len()];
    add(time("pool2 backward", || {
        max_pool2d_backward(&pool2, &mut gy2, Accum::Replace, &arg2, &gp2, b)
    }));
    // What the second convolution's backward pass gets: the gradient after the ReLU
    // is non-zero at one position per pooling window at most (its sparse path).
    let nonzero = gy2
        .iter()
        .zip(&y2)
        .filter(|&(&g, &y)| g != 0.0 && y > 0.0)
        .count();
    println!(
        "(conv2's pre-activation gradient: {} of {} values non-zero per sample)",
        nonzero / b,
        conv2.output_len()
    );
    let (mut gw2, mut gb2) = (vec![0.0; w2.len()], vec![0.0; 64]);
    let mut part2 = vec![0.0; conv2.partial_len()];
    // A convolution that keeps its columns overwrites them in backward.
    let (saved_cols2, saved_gy2) = (cols2.clone(), gy2.clone());
    let mut gp1 = vec![0.0; p1.len()];
    add(time_restoring("conv2 backward", |run| {
        cols2.copy_from_slice(&saved_cols2);
        gy2.copy_from_slice(&saved_gy2);
        if run {
            let gi = Some((gp1.as_mut_slice(), Accum::Replace));
            conv2d_backward(
                &conv2,
                gi,
                &mut gw2,
                Some(&mut gb2),
                &mut part2,
                &mut cols2,
                &p1,
                &w2,
                &y2,
                &mut gy2,
                relu,
                b,
            )
        }
    }));
    let mut gy1 = vec![0.0; y1.len()];
    add(time("pool1 backward", || {
        max_pool2d_backward(&pool1, &mut gy1, Accum::Replace, &arg1, &gp1, b)
    }));
    let (mut gw1, mut gb1) = (vec![0.0; w1.len()], vec![0.0; 32]);
    let mut part1 = vec![0.0; conv1.partial_len()];
    let saved_gy1 = gy1.clone();
    add(time_restoring("conv1 backward", |run| {
        gy1.copy_from_slice(&saved_gy1);
        if run {
            conv2d_backward(
                &conv1,
                None,
                &mut gw1,
                Some(&mut gb1),
                &mut part1,
                &mut cols1,
                &x,
                &w1,
                &y1,
                &mut gy1,
                relu,
                b,
            )
        }
    }));
    let count = w1.len() + 32 + w2.len() + 64 + w3.len() + 128 + w4.len() + 10;
    let (mut params, grads) = (values(count), values(count));
    let mut adam = Adam::new(1e-3);
    add(time("adam", || {
        adam.step(&mut params, &grads).expect("valid adam")
    }));
    println!("{:<26} {:>9.1} {:>9.1}", "sum", sum.0, sum.1);
}
