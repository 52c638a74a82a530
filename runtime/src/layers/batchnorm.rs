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
//! channel, each channel's sum in one fixed order (16 interleaved partial sums per
//! plane, then the samples in turn), so results do not depend on the thread count; the
//! element-wise passes split by sample. Serial scalar sums made batch norm 12 % of a
//! ResNet-20 training step.

use std::marker::PhantomData;

use super::{
    check_len, for_row_blocks, lane_sum, pass_cost, split_batch, stored, Accum, Activation, Both,
};
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
    let layout = Layout::of(s);
    forward(
        s, output, saved, running, input, gamma, beta, activation, training, batch, layout,
    );
}

/// How a layer's passes walk its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// A channel at a time, each thread its own channels: the statistics (or the
    /// gradient's sums), then the element-wise pass over the same channel's planes,
    /// which the first pass has just brought into the core's cache.
    Channels,
    /// The statistics split by channel, then the element-wise pass split by sample:
    /// for planes shorter than a vector, which a channel at a time would read a few
    /// values from each of many cache lines.
    Samples,
}

impl Layout {
    /// Planes of at least [`Layout::MIN_PLANE`] values go a channel at a time.
    fn of(s: &BatchNormShape) -> Layout {
        if s.inner >= Self::MIN_PLANE {
            Layout::Channels
        } else {
            Layout::Samples
        }
    }

    /// A vector of f32 on AVX-512.
    const MIN_PLANE: usize = 16;
}

/// [`batch_norm_forward`] in the given layout.
#[allow(clippy::too_many_arguments)]
fn forward<T: Float>(
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
    layout: Layout,
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
    let (running_mean, rest) = running.split_at_mut(c);
    let (running_var, tracked) = rest.split_at_mut(c);
    let m = (batch * inner) as f64;
    let stats = Statistics::new(s, m, training);
    let len = c * inner;
    // The statistics read each value twice (the mean, then the squared deviations).
    let stats_cost = if training { pass_cost(4.0, 2) * m } else { 0.0 };
    // The normalising pass reads the input and writes the output.
    let normalise_cost = pass_cost(2.0, 2);
    let planes = |ch: usize| {
        input
            .chunks_exact(len)
            .map(move |x| &x[ch * inner..][..inner])
    };
    match layout {
        Layout::Channels => {
            let out = Planes::new(output, c, inner);
            split_batch(
                c,
                stats_cost + normalise_cost * m,
                Both((&mut *mean, 1), (&mut *inv_std, 1)),
                Both((&mut *running_mean, 1), (&mut *running_var, 1)),
                &|first, (mean, inv_std), (running_mean, running_var)| {
                    for k in 0..mean.len() {
                        let ch = first + k;
                        vectorized(
                            #[inline(always)]
                            || {
                                stats.take(
                                    planes(ch),
                                    (&mut mean[k], &mut inv_std[k]),
                                    (&mut running_mean[k], &mut running_var[k]),
                                );
                                let scale = gamma[ch] * inv_std[k];
                                let shift = beta[ch] - mean[k] * scale;
                                for (n, x) in planes(ch).enumerate() {
                                    // SAFETY: channel `ch` is this thread's alone.
                                    let y = unsafe { out.plane(n, ch) };
                                    normalise(y, x, scale, shift, activation);
                                }
                            },
                        );
                    }
                },
            );
        }
        Layout::Samples => {
            split_batch(
                c,
                stats_cost,
                Both((&mut *mean, 1), (&mut *inv_std, 1)),
                Both((&mut *running_mean, 1), (&mut *running_var, 1)),
                &|first, (mean, inv_std), (running_mean, running_var)| {
                    for k in 0..mean.len() {
                        vectorized(
                            #[inline(always)]
                            || {
                                stats.take(
                                    planes(first + k),
                                    (&mut mean[k], &mut inv_std[k]),
                                    (&mut running_mean[k], &mut running_var[k]),
                                )
                            },
                        );
                    }
                },
            );
            let (mean, inv_std): (&[T], &[T]) = (mean, inv_std);
            for_row_blocks(
                output,
                len,
                normalise_cost * len as f64,
                &|first, output| {
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
                                    normalise(y, x, scale, shift, activation);
                                }
                            }
                        },
                    );
                },
            );
        }
    }
    if training {
        tracked[0] += T::ONE;
    }
}

/// What a channel's statistics need besides its values.
struct Statistics<T> {
    training: bool,
    inv_m: T,
    eps: T,
    momentum: T,
    keep: T,
    unbias: T,
}

impl<T: Float> Statistics<T> {
    fn new(s: &BatchNormShape, m: f64, training: bool) -> Self {
        let momentum = T::from_f64(s.momentum);
        Statistics {
            training,
            inv_m: T::from_f64(1.0 / m),
            eps: T::from_f64(s.eps),
            momentum,
            keep: T::ONE - momentum,
            unbias: T::from_f64(if m > 1.0 { m / (m - 1.0) } else { 1.0 }),
        }
    }

    /// One channel's mean and `1/√(σ² + ε)` into `saved`, from its planes in training
    /// (moving `running` by them), else from `running`.
    #[inline(always)]
    fn take<'a>(
        &self,
        planes: impl Iterator<Item = &'a [T]> + Clone,
        (mean, inv_std): (&mut T, &mut T),
        (running_mean, running_var): (&mut T, &mut T),
    ) where
        T: 'a,
    {
        if !self.training {
            *mean = *running_mean;
            *inv_std = T::ONE / (*running_var + self.eps).sqrt();
            return;
        }
        // Plain loops, not `fold`: a call the compiler does not inline would run
        // outside the vectorised wrapper.
        let mut total = T::ZERO;
        for x in planes.clone() {
            total += lane_sum([x], |[x]| x);
        }
        let mu = total * self.inv_m;
        let mut squares = T::ZERO;
        for x in planes {
            squares += lane_sum([x], |[x]| (x - mu) * (x - mu));
        }
        let var = squares * self.inv_m;
        *running_mean = self.keep * *running_mean + self.momentum * mu;
        *running_var = self.keep * *running_var + self.momentum * var * self.unbias;
        *mean = mu;
        *inv_std = T::ONE / (var + self.eps).sqrt();
    }
}

/// `y = f(x · scale + shift)` over one plane.
#[inline(always)]
fn normalise<T: Float>(y: &mut [T], x: &[T], scale: T, shift: T, activation: Activation) {
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

/// A `[batch, C, inner]` tensor whose `(sample, channel)` planes threads write by
/// channel: a channel's planes lie `C · inner` values apart, interleaved with the other
/// channels', so no split of the slice hands them to one thread.
struct Planes<'a, T> {
    values: *mut T,
    len: usize,
    channels: usize,
    inner: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: `Planes` is a `&mut [T]` whose planes are handed out one at a time; callers
// of `plane` guarantee no plane is handed out twice at once.
unsafe impl<T: Send> Sync for Planes<'_, T> {}

impl<'a, T> Planes<'a, T> {
    fn new(values: &'a mut [T], channels: usize, inner: usize) -> Self {
        Planes {
            values: values.as_mut_ptr(),
            len: values.len(),
            channels,
            inner,
            _borrow: PhantomData,
        }
    }

    /// Sample `n`'s plane of channel `ch`.
    ///
    /// # Safety
    /// No other reference to the same plane may be alive: each channel's planes are
    /// taken by one thread, once each.
    ///
    /// # Panics
    /// If the plane lies outside the tensor.
    #[allow(clippy::mut_from_ref)]
    unsafe fn plane(&self, n: usize, ch: usize) -> &mut [T] {
        let start = (n * self.channels + ch) * self.inner;
        assert!(ch < self.channels && start + self.inner <= self.len);
        // SAFETY: in bounds (above) and not aliased (the caller's guarantee).
        unsafe { std::slice::from_raw_parts_mut(self.values.add(start), self.inner) }
    }
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
    let layout = Layout::of(s);
    backward(
        s,
        grad_input,
        grad_gamma,
        grad_beta,
        saved,
        [input, output, grad_output],
        gamma,
        activation,
        batch,
        layout,
    );
}

/// [`batch_norm_backward`] in the given layout.
#[allow(clippy::too_many_arguments)]
fn backward<T: Float>(
    s: &BatchNormShape,
    grad_input: Option<(&mut [T], Accum)>,
    grad_gamma: &mut [T],
    grad_beta: &mut [T],
    saved: &[T],
    [input, output, grad_output]: [&[T]; 3],
    gamma: &[T],
    activation: Activation,
    batch: usize,
    layout: Layout,
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
    check_len("batch_norm gamma", gamma.len(), c);
    check_len("batch_norm grad_gamma", grad_gamma.len(), c);
    check_len("batch_norm grad_beta", grad_beta.len(), c);
    if let Some((grad_input, _)) = &grad_input {
        check_len("batch_norm grad_input", grad_input.len(), grad_output.len());
    }
    let (mean, inv_std) = saved.split_at(c);
    let len = c * inner;
    let m = (batch * inner) as f64;
    let inv_m = T::from_f64(1.0 / m);
    // Per channel: Σ g and Σ g (x − μ), the latter times 1/σ, with g at the
    // pre-activation. Five values read for each position (g and y for Σ g, then g, x
    // and y).
    let sums_cost = pass_cost(4.0, 5);
    // The input gradient reads g, x and y, and writes (or reads and writes) its value.
    let gradient_cost = |accum| pass_cost(6.0, 3 + stored(accum));
    let planes = |ch: usize| {
        let at = ch * inner..(ch + 1) * inner;
        grad_output
            .chunks_exact(len)
            .zip(input.chunks_exact(len))
            .zip(output.chunks_exact(len))
            .map(move |((g, x), y)| (&g[at.clone()], &x[at.clone()], &y[at.clone()]))
    };
    let coefficients = |ch: usize, sum_g: T, sum_gx: T| Coefficients {
        k: gamma[ch] * inv_std[ch],
        mu: mean[ch],
        inv_std: inv_std[ch],
        mean_g: sum_g * inv_m,
        mean_gx: sum_gx * inv_m,
    };
    match layout {
        Layout::Channels => {
            let cost = sums_cost + grad_input.as_ref().map_or(0.0, |&(_, a)| gradient_cost(a));
            let grad_input = grad_input.map(|(gi, accum)| (Planes::new(gi, c, inner), accum));
            split_batch(
                c,
                cost * m,
                (&mut *grad_beta, 1),
                (&mut *grad_gamma, 1),
                &|first, gb, gg| {
                    for k in 0..gb.len() {
                        let ch = first + k;
                        vectorized(
                            #[inline(always)]
                            || {
                                let (sum_g, centred) =
                                    channel_sums(planes(ch), mean[ch], activation);
                                gb[k] = sum_g;
                                gg[k] = centred * inv_std[ch];
                                let Some((grad_input, accum)) = &grad_input else {
                                    return;
                                };
                                let co = coefficients(ch, gb[k], gg[k]);
                                for (n, (g, x, y)) in planes(ch).enumerate() {
                                    // SAFETY: channel `ch` is this thread's alone.
                                    let gi = unsafe { grad_input.plane(n, ch) };
                                    co.input_gradient(gi, *accum, g, x, y, activation);
                                }
                            },
                        );
                    }
                },
            );
        }
        Layout::Samples => {
            split_batch(
                c,
                sums_cost * m,
                (&mut *grad_beta, 1),
                (&mut *grad_gamma, 1),
                &|first, gb, gg| {
                    for k in 0..gb.len() {
                        let ch = first + k;
                        vectorized(
                            #[inline(always)]
                            || {
                                let (sum_g, centred) =
                                    channel_sums(planes(ch), mean[ch], activation);
                                gb[k] = sum_g;
                                gg[k] = centred * inv_std[ch];
                            },
                        );
                    }
                },
            );
            let Some((grad_input, accum)) = grad_input else {
                return;
            };
            let (grad_gamma, grad_beta): (&[T], &[T]) = (grad_gamma, grad_beta);
            let flops = gradient_cost(accum) * len as f64;
            for_row_blocks(grad_input, len, flops, &|first, grad_input| {
                let n = grad_input.len();
                let (g, x, y) = (
                    &grad_output[first * len..][..n],
                    &input[first * len..][..n],
                    &output[first * len..][..n],
                );
                vectorized(
                    #[inline(always)]
                    || {
                        let samples = grad_input
                            .chunks_exact_mut(len)
                            .zip(g.chunks_exact(len))
                            .zip(x.chunks_exact(len).zip(y.chunks_exact(len)));
                        for ((gi, g), (x, y)) in samples {
                            for ch in 0..c {
                                let co = coefficients(ch, grad_beta[ch], grad_gamma[ch]);
                                let at = ch * inner..(ch + 1) * inner;
                                let gi = &mut gi[at.clone()];
                                let (g, x, y) = (&g[at.clone()], &x[at.clone()], &y[at]);
                                co.input_gradient(gi, accum, g, x, y, activation);
                            }
                        }
                    },
                );
            });
        }
    }
}

/// `(Σ g', Σ g' (x − μ))` over one channel's planes, `g' = g f'(y)` the gradient at the
/// pre-activation; each plane summed in lanes, the planes in turn.
#[inline(always)]
fn channel_sums<'a, T: Float + 'a>(
    planes: impl Iterator<Item = (&'a [T], &'a [T], &'a [T])>,
    mu: T,
    activation: Activation,
) -> (T, T) {
    #[inline(always)]
    fn sums<'a, T: Float + 'a>(
        planes: impl Iterator<Item = (&'a [T], &'a [T], &'a [T])>,
        mu: T,
        d: impl Fn(T, T) -> T,
    ) -> (T, T) {
        let (mut sum_g, mut centred) = (T::ZERO, T::ZERO);
        for (g, x, y) in planes {
            sum_g += lane_sum([g, y], |[g, y]| d(g, y));
            centred += lane_sum([g, x, y], |[g, x, y]| d(g, y) * (x - mu));
        }
        (sum_g, centred)
    }
    // With the activation a constant, the loops vectorise.
    match activation {
        Activation::Identity => sums(planes, mu, |g, _| g),
        Activation::Relu => sums(planes, mu, |g, y| {
            g * Activation::Relu.derivative_from_output(y)
        }),
        other => sums(planes, mu, |g, y| g * other.derivative_from_output(y)),
    }
}

/// A channel's constants in its input gradient.
#[derive(Clone, Copy)]
struct Coefficients<T> {
    /// `γ/σ`.
    k: T,
    mu: T,
    inv_std: T,
    /// `Σ g'/M`.
    mean_g: T,
    /// `Σ g' x̂/M`.
    mean_gx: T,
}

impl<T: Float> Coefficients<T> {
    /// `grad_input (=|+=) γ/σ · (g' − Σ g'/M − x̂ Σ g' x̂/M)` over one plane,
    /// `g' = g f'(y)`.
    #[inline(always)]
    fn input_gradient(
        &self,
        gi: &mut [T],
        accum: Accum,
        g: &[T],
        x: &[T],
        y: &[T],
        activation: Activation,
    ) {
        // With the activation a constant, the loops vectorise.
        match activation {
            Activation::Identity => self.plane(gi, accum, g, x, y, |g, _| g),
            Activation::Relu => self.plane(gi, accum, g, x, y, |g, y| {
                g * Activation::Relu.derivative_from_output(y)
            }),
            other => self.plane(gi, accum, g, x, y, |g, y| {
                g * other.derivative_from_output(y)
            }),
        }
    }

    #[inline(always)]
    fn plane(&self, gi: &mut [T], accum: Accum, g: &[T], x: &[T], y: &[T], d: impl Fn(T, T) -> T) {
        let Coefficients {
            k,
            mu,
            inv_std,
            mean_g,
            mean_gx,
        } = *self;
        let n = gi.len();
        let (g, x, y) = (&g[..n], &x[..n], &y[..n]);
        match accum {
            Accum::Replace => {
                for i in 0..n {
                    gi[i] = k * (d(g[i], y[i]) - mean_g - (x[i] - mu) * inv_std * mean_gx);
                }
            }
            Accum::Add => {
                for i in 0..n {
                    gi[i] += k * (d(g[i], y[i]) - mean_g - (x[i] - mu) * inv_std * mean_gx);
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
            // Planes of a vector and more: a channel at a time.
            (2, 16, 3, Activation::Tanh),
            (3, 20, 2, Activation::Identity),
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

    /// Batches large enough that the passes split across threads, a channel at a time
    /// (planes of 256) and by sample (planes of 4): the same values as the formulas
    /// evaluated plainly.
    #[test]
    fn split_passes_match_the_formulas() {
        for (c, inner, batch, layout) in [
            (8, 256, 256, Layout::Channels),
            (8, 4, 16_384, Layout::Samples),
        ] {
            split_passes_match_the_formulas_for(c, inner, batch, layout);
        }
    }

    fn split_passes_match_the_formulas_for(c: usize, inner: usize, batch: usize, layout: Layout) {
        let s = BatchNormShape {
            channels: c,
            inner,
            eps: 1e-5,
            momentum: 0.1,
        };
        assert_eq!(Layout::of(&s), layout);
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

    /// The two layouts give the same values, bit for bit: the sums run in the same order
    /// and each value is computed from the same constants. On one thread and on two.
    #[test]
    fn layouts_agree_bit_for_bit() {
        for (c, inner, batch) in [(3, 20, 5), (4, 48, 512)] {
            let s = BatchNormShape {
                channels: c,
                inner,
                eps: 1e-5,
                momentum: 0.1,
            };
            let x: Vec<f32> = narrow(&values(batch * c * inner, 51));
            let g: Vec<f32> = narrow(&values(x.len(), 52));
            let gamma: Vec<f32> = values(c, 53).iter().map(|&v| v as f32 + 1.0).collect();
            let beta: Vec<f32> = narrow(&values(c, 54));
            for activation in [Activation::Identity, Activation::Relu, Activation::Tanh] {
                for training in [true, false] {
                    let run = |layout| {
                        let mut y = vec![0.0; x.len()];
                        let mut saved = vec![0.0; 2 * c];
                        let mut running: Vec<f32> =
                            (0..2 * c + 1).map(|i| i as f32 * 0.1).collect();
                        forward(
                            &s,
                            &mut y,
                            &mut saved,
                            &mut running,
                            &x,
                            &gamma,
                            &beta,
                            activation,
                            training,
                            batch,
                            layout,
                        );
                        (y, saved, running)
                    };
                    let (y, saved, running) = run(Layout::Channels);
                    let samples = run(Layout::Samples);
                    assert_eq!(
                        (&y, &saved, &running),
                        (&samples.0, &samples.1, &samples.2),
                        "forward {activation:?}, training {training}"
                    );
                    if !training {
                        continue;
                    }
                    for accum in [None, Some(Accum::Replace), Some(Accum::Add)] {
                        let grads = |layout| {
                            let mut gx = vec![0.25; x.len()];
                            let (mut gg, mut gb) = (vec![0.0; c], vec![0.0; c]);
                            backward(
                                &s,
                                accum.map(|a| (&mut gx[..], a)),
                                &mut gg,
                                &mut gb,
                                &saved,
                                [&x, &y, &g],
                                &gamma,
                                activation,
                                batch,
                                layout,
                            );
                            (gx, gg, gb)
                        };
                        assert_eq!(
                            grads(Layout::Channels),
                            grads(Layout::Samples),
                            "backward {activation:?}, {accum:?}"
                        );
                    }
                }
            }
        }
    }
}
