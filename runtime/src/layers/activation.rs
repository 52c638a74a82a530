//! Elementwise activations: ReLU, leaky ReLU, sigmoid, tanh and GELU.
//!
//! | activation | forward | derivative |
//! | --- | --- | --- |
//! | `Relu` | `max(x, 0)` | `1` if `x > 0` else `0` |
//! | `LeakyRelu(a)` | `x` if `x > 0` else `a x` | `1` or `a` |
//! | `Sigmoid` | `1 / (1 + e^-x)` | `y (1 - y)` |
//! | `Tanh` | `tanh x` | `1 - y^2` |
//! | `Gelu` | `x Φ(x) = x/2 (1 + erf(x/√2))` (exact, PyTorch's default) | `Φ(x) + x φ(x)` |
//!
//! # Shapes
//! Any: the output has the input's shape.
//!
//! Activations whose derivative can be read off the output (all but GELU and a leaky
//! ReLU with a negative slope) are fused into the pass that follows a dense or
//! convolution GEMM, or into a batch norm's normalising pass, so their pre-activation
//! is never stored.

use super::{check_len, for_value_blocks, store, stored, Accum};
use crate::simd::vectorized;
use crate::Float;

/// An elementwise activation function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `y = x`.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `x` for positive `x`, `slope * x` otherwise (PyTorch's default slope is 0.01).
    LeakyRelu(f64),
    /// The logistic function.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Gaussian error linear unit, exact (erf) form.
    Gelu,
}

impl Activation {
    /// Whether the derivative is a function of the output alone, so the activation can
    /// be fused after a GEMM without keeping its input.
    pub const fn fusable(self) -> bool {
        match self {
            Activation::Identity | Activation::Relu | Activation::Sigmoid | Activation::Tanh => {
                true
            }
            Activation::LeakyRelu(slope) => slope >= 0.0,
            Activation::Gelu => false,
        }
    }

    /// A bound on `|f'(x)|` over every finite `x`: 1 for ReLU, tanh and the identity,
    /// `max(1, |slope|)` for leaky ReLU, 1/4 for the logistic function, and 1.13 for
    /// GELU (whose largest slope is 1.1289, at `x = √2`).
    pub fn derivative_bound(self) -> f64 {
        match self {
            Activation::Identity | Activation::Relu | Activation::Tanh => 1.0,
            Activation::LeakyRelu(slope) => slope.abs().max(1.0),
            Activation::Sigmoid => 0.25,
            Activation::Gelu => 1.13,
        }
    }

    /// `f(x)`.
    #[inline(always)]
    pub fn apply<T: Float>(self, x: T) -> T {
        match self {
            Activation::Identity => x,
            Activation::Relu => x.max(T::ZERO),
            Activation::LeakyRelu(slope) => {
                if x > T::ZERO {
                    x
                } else {
                    T::from_f64(slope) * x
                }
            }
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => x.tanh(),
            Activation::Gelu => {
                let half = T::from_f64(0.5);
                half * x * (T::ONE + (x * T::from_f64(core::f64::consts::FRAC_1_SQRT_2)).fast_erf())
            }
        }
    }

    /// `f'(x)` given both `x` and `y = f(x)`.
    #[inline(always)]
    pub fn derivative<T: Float>(self, x: T, y: T) -> T {
        match self {
            Activation::Gelu => {
                // erf(x/√2) and e^{−x²/2} from one exponential.
                let (erf, gauss) =
                    (x * T::from_f64(core::f64::consts::FRAC_1_SQRT_2)).fast_erf_gauss();
                let cdf = T::from_f64(0.5) * (T::ONE + erf);
                let pdf = T::from_f64(0.398_942_280_401_432_7) * gauss;
                cdf + x * pdf
            }
            Activation::LeakyRelu(slope) => {
                if x > T::ZERO {
                    T::ONE
                } else {
                    T::from_f64(slope)
                }
            }
            other => other.derivative_from_output(y),
        }
    }

    /// `f'(x)` from `y = f(x)` alone.
    ///
    /// # Panics
    /// In debug builds, for an activation that is not [`fusable`](Self::fusable).
    #[inline(always)]
    pub fn derivative_from_output<T: Float>(self, y: T) -> T {
        match self {
            Activation::Identity => T::ONE,
            Activation::Relu => {
                if y > T::ZERO {
                    T::ONE
                } else {
                    T::ZERO
                }
            }
            Activation::LeakyRelu(slope) => {
                debug_assert!(slope >= 0.0);
                if y > T::ZERO {
                    T::ONE
                } else {
                    T::from_f64(slope)
                }
            }
            Activation::Sigmoid => y * (T::ONE - y),
            Activation::Tanh => T::ONE - y * y,
            Activation::Gelu => unreachable!("gelu's derivative needs its input"),
        }
    }
}

impl Activation {
    /// About how many floating-point operations one value of [`apply`](Self::apply) or
    /// [`derivative`](Self::derivative) costs: with the values the pass reads and writes
    /// ([`pass_cost`](super::pass_cost)), what decides whether
    /// an element-wise pass is worth splitting across threads
    /// ([`PARALLEL_MIN_FLOPS`](super::PARALLEL_MIN_FLOPS)).
    pub(crate) fn cost(self) -> f64 {
        match self {
            Activation::Gelu => 40.0,
            Activation::Sigmoid | Activation::Tanh => 20.0,
            _ => 1.0,
        }
    }
}

/// The logistic function, without overflow for large `|x|`.
#[inline(always)]
pub fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

/// `output = f(input)`, elementwise.
///
/// # Panics
/// If the lengths differ.
pub fn activation_forward<T: Float>(activation: Activation, output: &mut [T], input: &[T]) {
    check_len("activation output", output.len(), input.len());
    // Split across threads for a costly function (GELU over a transformer's feed-forward
    // width) or a long tensor; each value as computed serially. Reads one value, writes
    // one.
    for_value_blocks(output, activation.cost(), 2, &|first, output| {
        let input = &input[first..][..output.len()];
        vectorized(
            #[inline(always)]
            || match activation {
                // With the activation a constant, the loop vectorises.
                Activation::Relu => {
                    for (y, &x) in output.iter_mut().zip(input) {
                        *y = Activation::Relu.apply(x);
                    }
                }
                Activation::Gelu => {
                    for (y, &x) in output.iter_mut().zip(input) {
                        *y = Activation::Gelu.apply(x);
                    }
                }
                other => {
                    for (y, &x) in output.iter_mut().zip(input) {
                        *y = other.apply(x);
                    }
                }
            },
        );
    });
}

/// `grad_input (=|+=) grad_output * f'(input)`, elementwise.
///
/// # Panics
/// If the lengths differ.
pub fn activation_backward<T: Float>(
    activation: Activation,
    grad_input: &mut [T],
    accum: Accum,
    input: &[T],
    output: &[T],
    grad_output: &[T],
) {
    let n = grad_output.len();
    check_len("activation grad_input", grad_input.len(), n);
    check_len("activation input", input.len(), n);
    check_len("activation output", output.len(), n);
    // Reads the input, the output and the output's gradient, stores the input's.
    for_value_blocks(
        grad_input,
        activation.cost(),
        3 + stored(accum),
        &|start, grad_input| {
            let n = grad_input.len();
            let (input, output) = (&input[start..][..n], &output[start..][..n]);
            let grad_output = &grad_output[start..][..n];
            // With the activation and the accumulation constants, the loops vectorise.
            let (g, x, y) = (grad_input, input, output);
            vectorized(
                #[inline(always)]
                || match (activation, accum) {
                    (Activation::Gelu, Accum::Replace) => {
                        derivative_values(Activation::Gelu, Accum::Replace, g, x, y, grad_output)
                    }
                    (Activation::Gelu, Accum::Add) => {
                        derivative_values(Activation::Gelu, Accum::Add, g, x, y, grad_output)
                    }
                    (Activation::Relu, Accum::Replace) => {
                        derivative_values(Activation::Relu, Accum::Replace, g, x, y, grad_output)
                    }
                    (Activation::Relu, Accum::Add) => {
                        derivative_values(Activation::Relu, Accum::Add, g, x, y, grad_output)
                    }
                    (other, accum) => derivative_values(other, accum, g, x, y, grad_output),
                },
            );
        },
    );
}

/// `grad_input (=|+=) grad_output * f'(input)` over equal-length slices; inlined into
/// each of [`activation_backward`]'s cases, where the arguments are constants.
#[inline(always)]
fn derivative_values<T: Float>(
    activation: Activation,
    accum: Accum,
    grad_input: &mut [T],
    input: &[T],
    output: &[T],
    grad_output: &[T],
) {
    for i in 0..grad_input.len() {
        let d = activation.derivative(input[i], output[i]);
        store(&mut grad_input[i], grad_output[i] * d, accum);
    }
}

/// `v = f(v + bias)` for every value of a slice, with the activation chosen once for the
/// whole slice rather than per value, so that the common cases vectorise.
///
/// # Panics
/// If the activation is not [fusable](Activation::fusable).
pub(crate) fn bias_activation_in_place<T: Float>(
    values: &mut [T],
    bias: T,
    activation: Activation,
) {
    vectorized(
        #[inline(always)]
        || match activation {
            Activation::Identity => values.iter_mut().for_each(|v| *v += bias),
            // With the activation a constant, the loop vectorises.
            Activation::Relu => values
                .iter_mut()
                .for_each(|v| *v = Activation::Relu.apply(*v + bias)),
            other => values.iter_mut().for_each(|v| *v = other.apply(*v + bias)),
        },
    );
}

/// `grad = grad ⊙ f'(y)` with `f'` read off the outputs `y`, the activation chosen once.
///
/// # Panics
/// If the activation's derivative needs its input (GELU) or the lengths differ.
pub(crate) fn scale_by_derivative<T: Float>(grad: &mut [T], output: &[T], activation: Activation) {
    assert_eq!(
        grad.len(),
        output.len(),
        "gradient and output lengths differ"
    );
    vectorized(
        #[inline(always)]
        || match activation {
            Activation::Identity => {}
            Activation::Relu => {
                // With the activation a constant, the loop vectorises.
                for (g, &y) in grad.iter_mut().zip(output) {
                    *g *= Activation::Relu.derivative_from_output(y);
                }
            }
            other => {
                for (g, &y) in grad.iter_mut().zip(output) {
                    *g *= other.derivative_from_output(y);
                }
            }
        },
    );
}

/// [`scale_by_derivative`] across the threads when the tensor is long enough
/// ([`for_value_blocks`]: it reads `grad` and `output` and writes `grad`).
pub(crate) fn scale_by_derivative_split<T: Float>(
    grad: &mut [T],
    output: &[T],
    activation: Activation,
) {
    check_len("activation output", output.len(), grad.len());
    for_value_blocks(grad, activation.cost(), 3, &|first, grad| {
        scale_by_derivative(grad, &output[first..][..grad.len()], activation);
    });
}

/// The largest magnitudes in a layer's output and in its gradient at the
/// pre-activation, taken by a guarded backward pass while it has them in hand, so that
/// the non-finite guard need not read them again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Maxima<T> {
    /// `max |output|`.
    pub output: T,
    /// `max |grad|` after the activation's derivative.
    pub grad: T,
}

/// [`scale_by_derivative`] that also takes the largest magnitudes of `output` and of the
/// scaled `grad` in the same pass; `None` if either holds a NaN or an infinity.
pub(crate) fn scale_by_derivative_noting<T: Float>(
    grad: &mut [T],
    output: &[T],
    activation: Activation,
) -> Option<Maxima<T>> {
    assert_eq!(
        grad.len(),
        output.len(),
        "gradient and output lengths differ"
    );
    // Integer maxima of the magnitudes' bits (`Float::abs_bits`): reductions the
    // compiler vectorises beside the derivative's product.
    let (grad_bits, output_bits) = vectorized(
        #[inline(always)]
        || match activation {
            Activation::Identity => noting(grad, output, |_| T::ONE),
            Activation::Relu => {
                noting(grad, output, |y| Activation::Relu.derivative_from_output(y))
            }
            other => noting(grad, output, |y| other.derivative_from_output(y)),
        },
    );
    crate::simd::clear_upper_vector_state();
    Some(Maxima {
        output: crate::float::finite_magnitude(output_bits)?,
        grad: crate::float::finite_magnitude(grad_bits)?,
    })
}

/// The loop of [`scale_by_derivative_noting`].
#[inline(always)]
fn noting<T: Float>(
    grad: &mut [T],
    output: &[T],
    derivative: impl Fn(T) -> T,
) -> (T::AbsBits, T::AbsBits) {
    let (mut grad_bits, mut output_bits) = (T::AbsBits::default(), T::AbsBits::default());
    for (g, &y) in grad.iter_mut().zip(output) {
        *g *= derivative(y);
        grad_bits = grad_bits.max(g.abs_bits());
        output_bits = output_bits.max(y.abs_bits());
    }
    (grad_bits, output_bits)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    const ALL: [Activation; 7] = [
        Activation::Identity,
        Activation::Relu,
        Activation::LeakyRelu(0.01),
        Activation::LeakyRelu(-0.3),
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Gelu,
    ];

    /// Passes long enough to be split across two threads (an odd length: unequal
    /// halves) give every value its definition: a half that read the other's values
    /// would not.
    #[test]
    fn split_passes_give_each_value_its_own() {
        let n = 150_001;
        // The cheapest of the passes below, a ReLU's forward pass, splits.
        let cheapest = super::super::pass_cost(Activation::Relu.cost(), 2);
        assert!(cheapest * n as f64 >= super::super::PARALLEL_MIN_FLOPS);
        let (x, g) = (values(n, 1), values(n, 2));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            for act in [Activation::Relu, Activation::Gelu] {
                let mut y = vec![0.0; n];
                activation_forward(act, &mut y, &x);
                for i in 0..n {
                    assert_eq!(y[i], act.apply(x[i]), "{act:?} at {i}");
                }
                for accum in [Accum::Replace, Accum::Add] {
                    let mut gx = vec![0.5; n];
                    activation_backward(act, &mut gx, accum, &x, &y, &g);
                    for i in 0..n {
                        let mut want = 0.5;
                        store(&mut want, g[i] * act.derivative(x[i], y[i]), accum);
                        assert_eq!(gx[i], want, "{act:?} {accum:?} at {i}");
                    }
                }
            }
            let relu = Activation::Relu;
            let y: Vec<f64> = x.iter().map(|&v| relu.apply(v)).collect();
            let mut scaled = g.clone();
            scale_by_derivative_split(&mut scaled, &y, relu);
            for i in 0..n {
                assert_eq!(
                    scaled[i],
                    g[i] * relu.derivative_from_output(y[i]),
                    "at {i}"
                );
            }
        });
    }

    #[test]
    fn backward_matches_finite_differences() {
        // Keep inputs away from the kinks of ReLU-like functions, where the finite
        // difference straddles two slopes.
        let x: Vec<f64> = values(65, 1)
            .iter()
            .map(|v| if v.abs() < 0.05 { v + 0.1 } else { v * 4.0 })
            .collect();
        let w = values(65, 2);
        for act in ALL {
            let mut y = vec![0.0; 65];
            activation_forward(act, &mut y, &x);
            let mut gx = vec![7.0; 65];
            activation_backward(act, &mut gx, Accum::Replace, &x, &y, &w);
            let numeric = numeric_grad(&x, 1e-6, |x| {
                let mut y = vec![0.0; x.len()];
                activation_forward(act, &mut y, x);
                dot(&w, &y)
            });
            assert_close(&gx, &numeric, 1e-8);
        }
    }

    #[test]
    fn fused_derivative_agrees_with_full_derivative() {
        let x = values(64, 3);
        for act in ALL.into_iter().filter(|a| a.fusable()) {
            for &v in &x {
                let y = act.apply(v);
                assert_eq!(act.derivative(v, y), act.derivative_from_output(y));
            }
        }
    }

    #[test]
    fn accumulate_adds_to_destination() {
        let x = [1.0, -2.0];
        let mut y = [0.0; 2];
        activation_forward(Activation::Relu, &mut y, &x);
        let mut gx = [10.0, 10.0];
        activation_backward(Activation::Relu, &mut gx, Accum::Add, &x, &y, &[1.0, 1.0]);
        assert_eq!(gx, [11.0, 10.0]);
    }

    /// The f32 passes (vectorised erf and exp for GELU, split across threads when large)
    /// agree with the exact f64 functions, for both accumulation modes.
    #[test]
    fn f32_passes_agree_with_f64() {
        let n = 200_003; // large enough to split, and not a multiple of 16
        let x64: Vec<f64> = (0..n).map(|i| (i as f64 / n as f64 - 0.5) * 24.0).collect();
        let g64: Vec<f64> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f64 / 500.0 - 1.0)
            .collect();
        let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
        let g32: Vec<f32> = g64.iter().map(|&v| v as f32).collect();
        for act in ALL {
            let (mut y64, mut y32) = (vec![0.0; n], vec![0.0_f32; n]);
            activation_forward(act, &mut y64, &x64);
            activation_forward(act, &mut y32, &x32);
            for accum in [Accum::Replace, Accum::Add] {
                let (mut d64, mut d32) = (vec![0.5; n], vec![0.5_f32; n]);
                activation_backward(act, &mut d64, accum, &x64, &y64, &g64);
                activation_backward(act, &mut d32, accum, &x32, &y32, &g32);
                for i in 0..n {
                    let scale = 1.0 + x64[i].abs();
                    assert!(
                        (f64::from(y32[i]) - y64[i]).abs() < 2e-6 * scale,
                        "{act:?} f({})",
                        x64[i]
                    );
                    assert!(
                        (f64::from(d32[i]) - d64[i]).abs() < 4e-6 * scale,
                        "{act:?} f'({})",
                        x64[i]
                    );
                }
            }
        }
    }

    #[test]
    fn sigmoid_is_stable_for_large_inputs() {
        assert_eq!(sigmoid(1000.0_f32), 1.0);
        assert_eq!(sigmoid(-1000.0_f32), 0.0);
        assert!(sigmoid(-1000.0_f64).is_finite());
    }

    #[test]
    fn noting_scales_as_the_plain_pass_and_takes_exact_maxima() {
        for act in ALL.into_iter().filter(|a| a.fusable()) {
            for len in [0, 1, 15, 16, 17, 100, 1031] {
                let y: Vec<f64> = values(len, 3).iter().map(|v| act.apply(v * 3.0)).collect();
                let g = values(len, 4);
                let (mut plain, mut noted) = (g.clone(), g.clone());
                scale_by_derivative(&mut plain, &y, act);
                let maxima = scale_by_derivative_noting(&mut noted, &y, act).unwrap();
                assert_eq!(plain, noted, "{act:?} {len}");
                let max = |v: &[f64]| v.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
                assert_eq!(maxima.grad, max(&plain), "{act:?} {len}");
                assert_eq!(maxima.output, max(&y), "{act:?} {len}");
                // A NaN or an infinity anywhere, in either, is reported.
                for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                    for at in [0, len / 2, len.saturating_sub(1)]
                        .into_iter()
                        .filter(|_| len > 0)
                    {
                        let mut g2 = g.clone();
                        g2[at] = bad;
                        let mut y2 = y.clone();
                        assert_eq!(scale_by_derivative_noting(&mut g2, &y, act), None);
                        y2[at] = bad;
                        let mut g3 = g.clone();
                        assert_eq!(scale_by_derivative_noting(&mut g3, &y2, act), None);
                    }
                }
            }
        }
        // f32 too, at the largest finite value.
        let mut g = vec![1.0_f32, -f32::MAX, 2.0];
        let m = scale_by_derivative_noting(&mut g, &[1.0, 1.0, -3.0], Activation::Identity);
        assert_eq!(
            m,
            Some(Maxima {
                output: 3.0,
                grad: f32::MAX
            })
        );
    }
}
