//! Softmax and log-softmax over the last axis.
//!
//! - softmax: `y_i = e^{x_i - m} / Σ_j e^{x_j - m}` with `m = max_j x_j`;
//!   backward `grad_input = y ⊙ (g - Σ_j g_j y_j)`.
//! - log-softmax: `y_i = x_i - m - ln Σ_j e^{x_j - m}`;
//!   backward `grad_input = g - e^{y} Σ_j g_j`.
//!
//! # Shapes
//! `rows x WIDTH`, normalised along each row (a sample of `[steps, classes]` is `steps`
//! rows). For training a classifier, prefer emitting logits and using
//! [`CrossEntropy`](crate::loss::CrossEntropy), which fuses log-softmax into the loss.

use super::{check_len, lane_max, lane_sum, store, Accum};
use crate::simd::vectorized;
use crate::Float;

/// `row = softmax(row)` (not empty): the maximum and the sum in vector lanes, the
/// exponentials with [`Float::fast_exp`] (f32: relative error below 3e-7; f64: `exp`).
/// Call it inside [`vectorized`] so that the loops compile to the processor's vectors.
#[inline(always)]
pub(super) fn softmax_in_place<T: Float>(row: &mut [T]) {
    let max = lane_max(row);
    row.iter_mut().for_each(|p| *p = (*p - max).fast_exp());
    let inv = T::ONE / lane_sum([&*row], |[p]| p);
    row.iter_mut().for_each(|p| *p *= inv);
}

/// `output = softmax(input)` along rows of `WIDTH`.
///
/// # Panics
/// If the lengths differ or are not a multiple of `WIDTH`.
pub fn softmax_forward<T: Float, const WIDTH: usize>(output: &mut [T], input: &[T]) {
    check_len("softmax output", output.len(), input.len());
    assert_eq!(input.len() % WIDTH, 0, "softmax: ragged rows");
    vectorized(
        #[inline(always)]
        || {
            for (y, x) in output
                .chunks_exact_mut(WIDTH)
                .zip(input.chunks_exact(WIDTH))
            {
                y.copy_from_slice(x);
                softmax_in_place(y);
            }
        },
    )
}

/// Gradient of [`softmax_forward`].
///
/// # Panics
/// If the lengths differ or are not a multiple of `WIDTH`.
pub fn softmax_backward<T: Float, const WIDTH: usize>(
    grad_input: &mut [T],
    accum: Accum,
    output: &[T],
    grad_output: &[T],
) {
    check_len("softmax grad_input", grad_input.len(), output.len());
    check_len("softmax grad_output", grad_output.len(), output.len());
    for ((gi, y), g) in grad_input
        .chunks_exact_mut(WIDTH)
        .zip(output.chunks_exact(WIDTH))
        .zip(grad_output.chunks_exact(WIDTH))
    {
        let dot: T = y.iter().zip(g).map(|(&a, &b)| a * b).sum();
        for i in 0..WIDTH {
            store(&mut gi[i], y[i] * (g[i] - dot), accum);
        }
    }
}

/// `output = log_softmax(input)` along rows of `WIDTH`.
///
/// # Panics
/// If the lengths differ or are not a multiple of `WIDTH`.
pub fn log_softmax_forward<T: Float, const WIDTH: usize>(output: &mut [T], input: &[T]) {
    check_len("log_softmax output", output.len(), input.len());
    assert_eq!(input.len() % WIDTH, 0, "log_softmax: ragged rows");
    vectorized(
        #[inline(always)]
        || {
            for (y, x) in output
                .chunks_exact_mut(WIDTH)
                .zip(input.chunks_exact(WIDTH))
            {
                let lse = log_sum_exp_in_lanes(x);
                for (yi, &xi) in y.iter_mut().zip(x) {
                    *yi = xi - lse;
                }
            }
        },
    )
}

/// `ln Σ e^{x_i}`, computed without overflow: the maximum and the sum of
/// `e^{x_i − max}` in vector lanes, with [`Float::fast_exp`] (f32: relative error below
/// 3e-7; f64: `exp`).
pub fn log_sum_exp<T: Float>(x: &[T]) -> T {
    vectorized(
        #[inline(always)]
        || log_sum_exp_in_lanes(x),
    )
}

/// [`log_sum_exp`]'s body, for loops that run inside [`vectorized`] already.
#[inline(always)]
pub(crate) fn log_sum_exp_in_lanes<T: Float>(x: &[T]) -> T {
    let m = lane_max(x);
    m + lane_sum([x], |[v]| (v - m).fast_exp()).ln()
}

/// Gradient of [`log_softmax_forward`].
///
/// # Panics
/// If the lengths differ or are not a multiple of `WIDTH`.
pub fn log_softmax_backward<T: Float, const WIDTH: usize>(
    grad_input: &mut [T],
    accum: Accum,
    output: &[T],
    grad_output: &[T],
) {
    check_len("log_softmax grad_input", grad_input.len(), output.len());
    check_len("log_softmax grad_output", grad_output.len(), output.len());
    for ((gi, y), g) in grad_input
        .chunks_exact_mut(WIDTH)
        .zip(output.chunks_exact(WIDTH))
        .zip(grad_output.chunks_exact(WIDTH))
    {
        let sum: T = g.iter().copied().sum();
        for i in 0..WIDTH {
            store(&mut gi[i], g[i] - y[i].exp() * sum, accum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn backward_matches_finite_differences() {
        for rows in [1, 2, 3] {
            let x: Vec<f64> = values(rows * 5, 7).iter().map(|v| v * 3.0).collect();
            let c = values(rows * 5, 8);
            let mut y = vec![0.0; x.len()];
            let mut gx = vec![0.0; x.len()];

            softmax_forward::<f64, 5>(&mut y, &x);
            softmax_backward::<f64, 5>(&mut gx, Accum::Replace, &y, &c);
            let numeric = numeric_grad(&x, 1e-6, |x| {
                let mut y = vec![0.0; x.len()];
                softmax_forward::<f64, 5>(&mut y, x);
                dot(&c, &y)
            });
            assert_close(&gx, &numeric, 1e-8);

            log_softmax_forward::<f64, 5>(&mut y, &x);
            log_softmax_backward::<f64, 5>(&mut gx, Accum::Replace, &y, &c);
            let numeric = numeric_grad(&x, 1e-6, |x| {
                let mut y = vec![0.0; x.len()];
                log_softmax_forward::<f64, 5>(&mut y, x);
                dot(&c, &y)
            });
            assert_close(&gx, &numeric, 1e-8);
        }
    }

    #[test]
    fn huge_logits_do_not_overflow() {
        let mut y = [0.0_f32; 3];
        softmax_forward::<f32, 3>(&mut y, &[1000.0, 1000.0, -1000.0]);
        assert_eq!(y, [0.5, 0.5, 0.0]);
        log_softmax_forward::<f32, 3>(&mut y, &[1000.0, 0.0, 0.0]);
        assert!(y.iter().all(|v| v.is_finite()));
    }
}
