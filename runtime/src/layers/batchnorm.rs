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
//! - A following activation whose derivative can be read off its output (ReLU, the
//!   logistic function, tanh; [`Activation::fusable`]) can be fused: the forward pass
//!   writes `f(γ x̂ + β)` and the backward pass takes `g ⊙ f'(y)` from the output `y` as
//!   it reads `g`, so neither the normalised values nor the activation's gradient is
//!   stored, and the two passes over the tensor that a separate activation layer makes
//!   are not made. The values are those of the two layers one after the other, bit for
//!   bit.
//!
//! # Initialisation
//! `γ = 1`, `β = 0`, running mean 0, running variance 1.
//!
//! # Speed
//! The per-channel sums run on two threads when the batch is large enough, split by
//! channel, each channel's sum in one fixed order (16 interleaved partial sums over the
//! planes in turn, folded once at the end), so results do not depend on the thread
//! count; the element-wise passes split by sample. Serial scalar sums made batch norm
//! 12 % of a ResNet-20 training step.

use super::{check_len, for_row_blocks, pass_cost, split_batch, stored, Accum, Activation, Lanes};
use crate::simd::vectorized;
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

/// Forward pass, then `activation` (`Identity` for none). `running` holds
/// `[running_mean (C), running_var (C), num_batches_tracked (1)]`; `saved` (`2C` values)
/// receives the batch mean and `1/√(σ² + ε)` for backward. In inference
/// (`training = false`), `running` is only read.
///
/// # Panics
/// If a length does not match, or the activation is not [fusable](Activation::fusable).
pub fn batch_norm_forward<T: Float>(
    s: &BatchNormShape,
    output: &mut [T],
    saved: &mut [T],
    running: &mut [T],
    input: &[T],
    gamma: &[T],
    beta: &[T],
    activation: Activation,
    training: bool,
    batch: usize,
) {
    assert!(
        activation.fusable(),
        "batch norm fuses only an activation whose derivative is a function of its output"
    );
    let (c, inner) = (s.channels, s.inner);
    check_len("batch_norm input", input.len(), batch * c * inner);
    check_len("batch_norm output", output.len(), input.len());
    check_len("batch_norm saved", saved.len(), 2 * c);
    check_len("batch_norm running", running.len(), 2 * c + 1);
    let (mean, inv_std) = saved.split_at_mut(c);
    let eps = T::from_f64(s.eps);
    if training {
        let m = (batch * inner) as f64;
        let inv_m = T::from_f64(1.0 / m);
        // Per channel: the mean, then the sum of squared deviations (into `inv_std`).
        // Two reads of each value (the mean, then the squared deviations).
        split_batch(
            c,
            pass_cost(4.0, 2) * m,
            (&mut *mean, 1),
            (&mut *inv_std, 1),
            &|first, mean, var| {
                for (k, (mu, var)) in mean.iter_mut().zip(var.iter_mut()).enumerate() {
                    let ch = first + k;
                    let planes = input
                        .chunks_exact(c * inner)
                        .map(|x| &x[ch * inner..][..inner]);
                    vectorized(
                        #[inline(always)]
                        || {
                            // Plain loops, not `Iterator::fold`: a call the compiler
                            // does not inline would run outside the vectorised wrapper.
                            let mut total = Lanes::zero();
                            for x in planes.clone() {
                                total.add([x], |[x]| x);
                            }
                            *mu = total.sum() * inv_m;
                            let m = *mu;
                            let mut squares = Lanes::zero();
                            for x in planes {
                                squares.add([x], |[x]| (x - m) * (x - m));
                            }
                            *var = squares.sum();
                        },
                    );
                }
            },
        );
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
    let (mean, inv_std): (&[T], &[T]) = (mean, inv_std);
    let len = c * inner;
    // Reads the input, writes the output.
    let flops = pass_cost(2.0, 2) * len as f64;
    for_row_blocks(output, len, flops, &|first, output| {
        let input = &input[first * len..][..output.len()];
        vectorized(
            #[inline(always)]
            || {
                for (y_sample, x_sample) in
                    output.chunks_exact_mut(len).zip(input.chunks_exact(len))
                {
                    for ch in 0..c {
                        let scale = gamma[ch] * inv_std[ch];
                        let shift = beta[ch] - mean[ch] * scale;
                        let range = ch * inner..(ch + 1) * inner;
                        let (y, x) = (&mut y_sample[range.clone()], &x_sample[range]);
                        // With the activation a constant, the loops vectorise.
                        match activation {
                            Activation::Identity => {
                                for (yv, &xv) in y.iter_mut().zip(x) {
                                    *yv = xv * scale + shift;
                                }
                            }
                            Activation::Relu => {
                                for (yv, &xv) in y.iter_mut().zip(x) {
                                    *yv = Activation::Relu.apply(xv * scale + shift);
                                }
                            }
                            other => {
                                for (yv, &xv) in y.iter_mut().zip(x) {
                                    *yv = other.apply(xv * scale + shift);
                                }
                            }
                        }
                    }
                }
            },
        );
    });
}

/// Backward pass of a training-mode [`batch_norm_forward`] with the same `activation`,
/// from the statistics it saved and its `output`. `grad_gamma` and `grad_beta` are
/// replaced.
///
/// # Panics
/// If a length does not match, or the activation is not [fusable](Activation::fusable).
pub fn batch_norm_backward<T: Float>(
    s: &BatchNormShape,
    grad_input: Option<(&mut [T], Accum)>,
    grad_gamma: &mut [T],
    grad_beta: &mut [T],
    saved: &[T],
    input: &[T],
    output: &[T],
    gamma: &[T],
    grad_output: &[T],
    activation: Activation,
    batch: usize,
) {
    assert!(
        activation.fusable(),
        "batch norm fuses only an activation whose derivative is a function of its output"
    );
    let (c, inner) = (s.channels, s.inner);
    check_len(
        "batch_norm grad_output",
        grad_output.len(),
        batch * c * inner,
    );
    check_len("batch_norm input", input.len(), grad_output.len());
    check_len("batch_norm output", output.len(), grad_output.len());
    let (mean, inv_std) = saved.split_at(c);
    let len = c * inner;
    let m = (batch * inner) as f64;
    // Per channel: Σ g and Σ g (x − μ), the latter times 1/σ, with g at the
    // pre-activation.
    // Five values read for each position (g and y for Σ g, then g, x and y).
    split_batch(
        c,
        pass_cost(4.0, 5) * m,
        (&mut *grad_beta, 1),
        (&mut *grad_gamma, 1),
        &|first, gb, gg| {
            for (k, (gb, gg)) in gb.iter_mut().zip(gg.iter_mut()).enumerate() {
                let ch = first + k;
                let mu = mean[ch];
                let at = ch * inner..(ch + 1) * inner;
                let planes = grad_output
                    .chunks_exact(len)
                    .zip(input.chunks_exact(len))
                    .zip(output.chunks_exact(len))
                    .map(|((g, x), y)| (&g[at.clone()], &x[at.clone()], &y[at.clone()]));
                vectorized(
                    #[inline(always)]
                    || {
                        // With the activation a constant, the loops vectorise.
                        let (sum_g, centred) = match activation {
                            Activation::Identity => channel_sums(planes, mu, |g, _| g),
                            Activation::Relu => channel_sums(planes, mu, |g, y| {
                                g * Activation::Relu.derivative_from_output(y)
                            }),
                            other => {
                                channel_sums(planes, mu, |g, y| g * other.derivative_from_output(y))
                            }
                        };
                        *gb = sum_g;
                        *gg = centred * inv_std[ch];
                    },
                );
            }
        },
    );
    let Some((grad_input, accum)) = grad_input else {
        return;
    };
    check_len("batch_norm grad_input", grad_input.len(), grad_output.len());
    let inv_m = T::from_f64(1.0 / m);
    let (grad_gamma, grad_beta): (&[T], &[T]) = (grad_gamma, grad_beta);
    // Reads g, x and y, writes (or reads and writes) the input gradient.
    let flops = pass_cost(6.0, 3 + stored(accum)) * len as f64;
    for_row_blocks(grad_input, len, flops, &|first, grad_input| {
        let n = grad_input.len();
        let rows = Rows {
            g: &grad_output[first * len..][..n],
            x: &input[first * len..][..n],
            y: &output[first * len..][..n],
            len,
            inner,
            gamma,
            mean,
            inv_std,
            // Σ g and Σ g x̂ over M.
            sums: (grad_beta, grad_gamma, inv_m),
        };
        vectorized(
            #[inline(always)]
            || match activation {
                // With the activation a constant, the loops vectorise.
                Activation::Identity => rows.input_gradient(grad_input, accum, |g, _| g),
                Activation::Relu => rows.input_gradient(grad_input, accum, |g, y| {
                    g * Activation::Relu.derivative_from_output(y)
                }),
                other => rows.input_gradient(grad_input, accum, |g, y| {
                    g * other.derivative_from_output(y)
                }),
            },
        );
    });
}

/// `(Σ g', Σ g' (x − μ))` over one channel's planes, `g' = d(g, y)` the gradient at the
/// pre-activation; the planes in turn into one set of lanes ([`Lanes`]).
#[inline(always)]
fn channel_sums<'a, T: Float + 'a>(
    planes: impl Iterator<Item = (&'a [T], &'a [T], &'a [T])>,
    mu: T,
    d: impl Fn(T, T) -> T,
) -> (T, T) {
    let (mut sum_g, mut centred) = (Lanes::zero(), Lanes::zero());
    for (g, x, y) in planes {
        sum_g.add([g, y], |[g, y]| d(g, y));
        centred.add([g, x, y], |[g, x, y]| d(g, y) * (x - mu));
    }
    (sum_g.sum(), centred.sum())
}

/// One thread's samples of the input-gradient pass and what it reads.
struct Rows<'a, T> {
    g: &'a [T],
    x: &'a [T],
    y: &'a [T],
    len: usize,
    inner: usize,
    gamma: &'a [T],
    mean: &'a [T],
    inv_std: &'a [T],
    sums: (&'a [T], &'a [T], T),
}

impl<T: Float> Rows<'_, T> {
    /// `grad_input (=|+=) γ/σ · (g' − Σ g'/M − x̂ Σ g' x̂/M)`, `g' = d(g, y)`.
    #[inline(always)]
    fn input_gradient(&self, grad_input: &mut [T], accum: Accum, d: impl Fn(T, T) -> T) {
        let (inner, (grad_beta, grad_gamma, inv_m)) = (self.inner, self.sums);
        let samples = grad_input
            .chunks_exact_mut(self.len)
            .zip(self.g.chunks_exact(self.len))
            .zip(
                self.x
                    .chunks_exact(self.len)
                    .zip(self.y.chunks_exact(self.len)),
            );
        for ((gi_sample, g_sample), (x_sample, y_sample)) in samples {
            for ch in 0..self.mean.len() {
                let (mu, is) = (self.mean[ch], self.inv_std[ch]);
                let k = self.gamma[ch] * is;
                let (sum_g, sum_gx) = (grad_beta[ch] * inv_m, grad_gamma[ch] * inv_m);
                let range = ch * inner..(ch + 1) * inner;
                let gi = &mut gi_sample[range.clone()];
                let (g, x) = (&g_sample[range.clone()], &x_sample[range.clone()]);
                let y = &y_sample[range];
                match accum {
                    Accum::Replace => {
                        for i in 0..inner {
                            gi[i] = k * (d(g[i], y[i]) - sum_g - (x[i] - mu) * is * sum_gx);
                        }
                    }
                    Accum::Add => {
                        for i in 0..inner {
                            gi[i] += k * (d(g[i], y[i]) - sum_g - (x[i] - mu) * is * sum_gx);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{activation_backward, activation_forward, PARALLEL_MIN_FLOPS};
    use super::*;

    /// A training-mode forward pass from zeroed running statistics: `(y, saved,
    /// running)`.
    fn train(
        s: &BatchNormShape,
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
        activation: Activation,
        batch: usize,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let c = s.channels;
        let (mut y, mut saved) = (vec![0.0; x.len()], vec![0.0; 2 * c]);
        let mut running = vec![0.0; 2 * c + 1];
        batch_norm_forward(
            s,
            &mut y,
            &mut saved,
            &mut running,
            x,
            gamma,
            beta,
            activation,
            true,
            batch,
        );
        (y, saved, running)
    }

    #[test]
    fn training_gradients_match_finite_differences() {
        let cases = [
            (3, 1, 5, Activation::Identity),
            (2, 6, 3, Activation::Identity),
            (4, 4, 1, Activation::Identity),
            (2, 6, 3, Activation::Tanh),
            (3, 4, 2, Activation::Sigmoid),
        ];
        for (c, inner, batch, activation) in cases {
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
                train(&s, x, gamma, beta, activation, batch)
            };
            let (y, saved, _) = run(&x, &gamma, &beta);
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
                &y,
                &gamma,
                &w,
                activation,
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
            Activation::Identity,
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
            Activation::Identity,
            false,
            2,
        );
        assert!((y[0] - (1.0 - 0.3) / (running[1] + 1e-5_f64).sqrt()).abs() < 1e-12);
        assert_eq!(running[2], 1.0, "inference changes nothing");
    }

    /// A fused activation gives the values of batch norm and then the activation layer,
    /// forward and backward, bit for bit; on one thread and split across two.
    #[test]
    fn fused_activation_is_the_two_layers_in_turn() {
        for (c, inner, batch) in [(3, 5, 4), (8, 256, 256)] {
            let s = BatchNormShape {
                channels: c,
                inner,
                eps: 1e-5,
                momentum: 0.1,
            };
            let x = values(batch * c * inner, 41);
            let g = values(x.len(), 42);
            let gamma: Vec<f64> = values(c, 43).iter().map(|v| v + 1.0).collect();
            let beta = values(c, 44);
            for activation in FUSABLE {
                for accum in [Accum::Replace, Accum::Add] {
                    let forward = |act| train(&s, &x, &gamma, &beta, act, batch);
                    let backward = |act: Activation, y: &[f64], saved: &[f64], g: &[f64]| {
                        let (mut gx, mut gg, mut gb) =
                            (vec![0.5; x.len()], vec![0.0; c], vec![0.0; c]);
                        batch_norm_backward(
                            &s,
                            Some((&mut gx, accum)),
                            &mut gg,
                            &mut gb,
                            saved,
                            &x,
                            y,
                            &gamma,
                            g,
                            act,
                            batch,
                        );
                        (gx, gg, gb)
                    };
                    // The two layers in turn.
                    let (normed, saved, running) = forward(Activation::Identity);
                    let mut y = vec![0.0; x.len()];
                    activation_forward(activation, &mut y, &normed);
                    let mut g_pre = vec![0.0; x.len()];
                    activation_backward(activation, &mut g_pre, Accum::Replace, &normed, &y, &g);
                    let two = backward(Activation::Identity, &normed, &saved, &g_pre);
                    // Fused.
                    let (fused_y, fused_saved, fused_running) = forward(activation);
                    assert_eq!(fused_y, y, "{activation:?} forward");
                    assert_eq!((&fused_saved, &fused_running), (&saved, &running));
                    let fused = backward(activation, &fused_y, &fused_saved, &g);
                    assert_eq!(fused, two, "{activation:?} backward, {accum:?}");
                }
            }
        }
    }

    /// A batch large enough that the sums split by channel and the element-wise passes
    /// by sample: the same values as the formulas evaluated plainly.
    #[test]
    fn split_passes_match_the_formulas() {
        let (c, inner, batch) = (8, 256, 256);
        let s = BatchNormShape {
            channels: c,
            inner,
            eps: 1e-5,
            momentum: 0.1,
        };
        assert!(4.0 * (batch * inner * c) as f64 >= PARALLEL_MIN_FLOPS);
        let x: Vec<f64> = values(batch * c * inner, 31)
            .iter()
            .map(|v| 3.0 * v + 0.5)
            .collect();
        let g = values(x.len(), 32);
        let gamma: Vec<f64> = values(c, 33).iter().map(|v| v + 1.5).collect();
        let beta = values(c, 34);
        let (y, saved, _) = train(&s, &x, &gamma, &beta, Activation::Identity, batch);
        let (mut gx, mut gg, mut gb) = (vec![1.0; x.len()], vec![0.0; c], vec![0.0; c]);
        let grad_input = Some((&mut gx[..], Accum::Add));
        batch_norm_backward(
            &s,
            grad_input,
            &mut gg,
            &mut gb,
            &saved,
            &x,
            &y,
            &gamma,
            &g,
            Activation::Identity,
            batch,
        );
        let m = (batch * inner) as f64;
        let at = |n: usize, ch: usize, i: usize| (n * c + ch) * inner + i;
        for ch in 0..c {
            let idx = || (0..batch).flat_map(move |n| (0..inner).map(move |i| at(n, ch, i)));
            let mean = idx().map(|k| x[k]).sum::<f64>() / m;
            let var = idx().map(|k| (x[k] - mean).powi(2)).sum::<f64>() / m;
            let inv_std = 1.0 / (var + 1e-5).sqrt();
            let sum_g: f64 = idx().map(|k| g[k]).sum();
            let sum_gx: f64 = idx().map(|k| g[k] * (x[k] - mean) * inv_std).sum();
            assert!((gb[ch] - sum_g).abs() < 1e-9 && (gg[ch] - sum_gx).abs() < 1e-9);
            for k in idx() {
                let x_hat = (x[k] - mean) * inv_std;
                assert!((y[k] - (gamma[ch] * x_hat + beta[ch])).abs() < 1e-10);
                let want = 1.0 + gamma[ch] * inv_std / m * (m * g[k] - sum_g - x_hat * sum_gx);
                assert!((gx[k] - want).abs() < 1e-10, "{} {}", gx[k], want);
            }
        }
    }
}
