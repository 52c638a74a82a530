//! Batch normalisation over the channel axis, as PyTorch's `BatchNorm1d` and
//! `BatchNorm2d`.
//!
//! Samples are laid out `[C, inner]` (`inner = 1` for `[features]`, `L` for `[C, L]`,
//! `H · W` for `[C, H, W]`); statistics are taken per channel over the batch and the
//! inner positions, `M = batch · inner` values.
//!
//! - Training: `x̂ = (x − μ) / √(σ² + ε)` with the batch mean and biased variance,
//!   `y = γ x̂ + β`; the running statistics move by `momentum`:
//!   `r_μ ← (1 − m) r_μ + m μ`, `r_σ² ← (1 − m) r_σ² + m σ² · M / (M − 1)` (unbiased; with
//!   `M = 1` the biased value is used, where PyTorch refuses to train);
//!   `num_batches_tracked` counts the updates.
//! - Inference: the running statistics replace the batch's.
//! - Backward (training): with `g = grad_output`,
//!   `grad_γ = Σ g x̂`, `grad_β = Σ g`,
//!   `grad_x = γ / (M √(σ² + ε)) · (M g − Σ g − x̂ Σ g x̂)`.
//!
//! # Initialisation
//! `γ = 1`, `β = 0`, running mean 0, running variance 1.

use super::{check_len, store, Accum};
use crate::Float;

/// Channels, positions per channel and the constants of a batch-norm layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormShape {
    /// Channels (features).
    pub channels: usize,
    /// Positions per channel in one sample.
    pub inner: usize,
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the newest batch in the running statistics.
    pub momentum: f64,
}

/// Forward pass. `running` holds `[running_mean (C), running_var (C),
/// num_batches_tracked (1)]`; `saved` (`2C` values) receives the batch mean and
/// `1/√(σ² + ε)` for backward. In inference (`training = false`), `running` is only read.
///
/// # Panics
/// If a length does not match.
pub fn batch_norm_forward<T: Float>(
    s: &BatchNormShape,
    output: &mut [T],
    saved: &mut [T],
    running: &mut [T],
    input: &[T],
    gamma: &[T],
    beta: &[T],
    training: bool,
    batch: usize,
) {
    let (c, inner) = (s.channels, s.inner);
    check_len("batch_norm input", input.len(), batch * c * inner);
    check_len("batch_norm output", output.len(), input.len());
    check_len("batch_norm saved", saved.len(), 2 * c);
    check_len("batch_norm running", running.len(), 2 * c + 1);
    let (mean, inv_std) = saved.split_at_mut(c);
    let eps = T::from_f64(s.eps);
    if training {
        let m = (batch * inner) as f64;
        mean.fill(T::ZERO);
        for sample in input.chunks_exact(c * inner) {
            for (mu, plane) in mean.iter_mut().zip(sample.chunks_exact(inner)) {
                *mu += plane.iter().copied().sum::<T>();
            }
        }
        let inv_m = T::from_f64(1.0 / m);
        mean.iter_mut().for_each(|mu| *mu *= inv_m);
        inv_std.fill(T::ZERO);
        for sample in input.chunks_exact(c * inner) {
            for ((var, &mu), plane) in inv_std
                .iter_mut()
                .zip(mean.iter())
                .zip(sample.chunks_exact(inner))
            {
                *var += plane.iter().map(|&x| (x - mu) * (x - mu)).sum::<T>();
            }
        }
        let momentum = T::from_f64(s.momentum);
        let keep = T::ONE - momentum;
        let unbias = T::from_f64(if m > 1.0 { m / (m - 1.0) } else { 1.0 });
        let (running_mean, rest) = running.split_at_mut(c);
        let (running_var, tracked) = rest.split_at_mut(c);
        for ch in 0..c {
            let var = inv_std[ch] * inv_m;
            running_mean[ch] = keep * running_mean[ch] + momentum * mean[ch];
            running_var[ch] = keep * running_var[ch] + momentum * var * unbias;
            inv_std[ch] = T::ONE / (var + eps).sqrt();
        }
        tracked[0] += T::ONE;
    } else {
        for ch in 0..c {
            mean[ch] = running[ch];
            inv_std[ch] = T::ONE / (running[c + ch] + eps).sqrt();
        }
    }
    for (y_sample, x_sample) in output
        .chunks_exact_mut(c * inner)
        .zip(input.chunks_exact(c * inner))
    {
        for ch in 0..c {
            let scale = gamma[ch] * inv_std[ch];
            let shift = beta[ch] - mean[ch] * scale;
            let y = &mut y_sample[ch * inner..(ch + 1) * inner];
            for (yv, &xv) in y.iter_mut().zip(&x_sample[ch * inner..(ch + 1) * inner]) {
                *yv = xv * scale + shift;
            }
        }
    }
}

/// Backward pass of a training-mode [`batch_norm_forward`], from the statistics it
/// saved. `grad_gamma` and `grad_beta` are replaced.
///
/// # Panics
/// If a length does not match.
pub fn batch_norm_backward<T: Float>(
    s: &BatchNormShape,
    grad_input: Option<(&mut [T], Accum)>,
    grad_gamma: &mut [T],
    grad_beta: &mut [T],
    saved: &[T],
    input: &[T],
    gamma: &[T],
    grad_output: &[T],
    batch: usize,
) {
    let (c, inner) = (s.channels, s.inner);
    check_len(
        "batch_norm grad_output",
        grad_output.len(),
        batch * c * inner,
    );
    let (mean, inv_std) = saved.split_at(c);
    grad_gamma.fill(T::ZERO);
    grad_beta.fill(T::ZERO);
    for (g_sample, x_sample) in grad_output
        .chunks_exact(c * inner)
        .zip(input.chunks_exact(c * inner))
    {
        for ch in 0..c {
            let range = ch * inner..(ch + 1) * inner;
            for (&g, &x) in g_sample[range.clone()].iter().zip(&x_sample[range]) {
                grad_beta[ch] += g;
                grad_gamma[ch] += g * (x - mean[ch]) * inv_std[ch];
            }
        }
    }
    let Some((grad_input, accum)) = grad_input else {
        return;
    };
    check_len("batch_norm grad_input", grad_input.len(), grad_output.len());
    let inv_m = T::from_f64(1.0 / (batch * inner) as f64);
    for ((gi_sample, g_sample), x_sample) in grad_input
        .chunks_exact_mut(c * inner)
        .zip(grad_output.chunks_exact(c * inner))
        .zip(input.chunks_exact(c * inner))
    {
        for ch in 0..c {
            let k = gamma[ch] * inv_std[ch];
            let (sum_g, sum_gx) = (grad_beta[ch] * inv_m, grad_gamma[ch] * inv_m);
            let range = ch * inner..(ch + 1) * inner;
            for ((gi, &g), &x) in gi_sample[range.clone()]
                .iter_mut()
                .zip(&g_sample[range.clone()])
                .zip(&x_sample[range])
            {
                let x_hat = (x - mean[ch]) * inv_std[ch];
                store(gi, k * (g - sum_g - x_hat * sum_gx), accum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn training_gradients_match_finite_differences() {
        for (c, inner, batch) in [(3, 1, 5), (2, 6, 3), (4, 4, 1)] {
            let s = BatchNormShape {
                channels: c,
                inner,
                eps: 1e-5,
                momentum: 0.1,
            };
            let x = values(batch * c * inner, 21);
            let gamma: Vec<f64> = values(c, 22).iter().map(|v| v + 1.5).collect();
            let beta = values(c, 23);
            let w = values(x.len(), 24);
            let run = |x: &[f64], gamma: &[f64], beta: &[f64]| {
                let mut y = vec![0.0; x.len()];
                let mut saved = vec![0.0; 2 * c];
                let mut running = vec![0.0; 2 * c + 1];
                batch_norm_forward(
                    &s,
                    &mut y,
                    &mut saved,
                    &mut running,
                    x,
                    gamma,
                    beta,
                    true,
                    batch,
                );
                (y, saved, running)
            };
            let (_, saved, _) = run(&x, &gamma, &beta);
            let mut gx = vec![0.0; x.len()];
            let mut gg = vec![0.0; c];
            let mut gb = vec![0.0; c];
            batch_norm_backward(
                &s,
                Some((&mut gx, Accum::Replace)),
                &mut gg,
                &mut gb,
                &saved,
                &x,
                &gamma,
                &w,
                batch,
            );
            let loss = |x: &[f64], g: &[f64], b: &[f64]| dot(&w, &run(x, g, b).0);
            assert_close(
                &gx,
                &numeric_grad(&x, 1e-6, |x| loss(x, &gamma, &beta)),
                1e-6,
            );
            assert_close(
                &gg,
                &numeric_grad(&gamma, 1e-6, |g| loss(&x, g, &beta)),
                1e-7,
            );
            assert_close(
                &gb,
                &numeric_grad(&beta, 1e-6, |b| loss(&x, &gamma, b)),
                1e-7,
            );
        }
    }

    #[test]
    fn running_statistics_follow_pytorch() {
        let s = BatchNormShape {
            channels: 1,
            inner: 2,
            eps: 1e-5,
            momentum: 0.1,
        };
        let x = [1.0, 2.0, 3.0, 6.0];
        let mut y = [0.0; 4];
        let mut saved = [0.0; 2];
        let mut running = [0.0, 1.0, 0.0];
        batch_norm_forward(
            &s,
            &mut y,
            &mut saved,
            &mut running,
            &x,
            &[1.0],
            &[0.0],
            true,
            2,
        );
        // mean 3, biased var 3.5, unbiased 14/3
        assert!((running[0] - 0.3).abs() < 1e-12);
        assert!((running[1] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-12);
        assert_eq!(running[2], 1.0);
        // Inference uses the running statistics.
        batch_norm_forward(
            &s,
            &mut y,
            &mut saved,
            &mut running,
            &x,
            &[1.0],
            &[0.0],
            false,
            2,
        );
        assert!((y[0] - (1.0 - 0.3) / (running[1] + 1e-5_f64).sqrt()).abs() < 1e-12);
        assert_eq!(running[2], 1.0, "inference changes nothing");
    }
}
