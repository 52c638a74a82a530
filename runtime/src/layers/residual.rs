//! Residual connections: `y = f(x + g(x))`, where `g` is the block's inner layers and
//! `f` an activation fused after the sum (the identity if none follows the block).
//!
//! Backward: `dL/dx` receives the gradient at the sum, `grad_output ⊙ f'(y)`, once
//! through the skip and once through `g`, so the skip writes it first and the inner
//! layers' backward accumulates onto it.
//!
//! The forward pass is a sum of two terms, [`sum_forward`](super::sum_forward) of
//! `[input, inner]`. A following activation whose derivative can be read off its output
//! (ReLU, the logistic function, tanh; [`Activation::fusable`]) is applied as the sum is
//! written and differentiated as the gradient is routed, as a ResNet's basic block ends,
//! so it makes no passes of its own and stores no tensor.
//!
//! # Shapes
//! `g` must preserve the shape (the macro checks it); `x`, `g(x)` and `y` have one shape.

use super::{
    check_len, for_value_blocks, pass_cost, split_batch, store, stored, Accum, Activation,
};
use crate::simd::vectorized;
use crate::Float;

/// Routes the gradient at the sum, `grad_output ⊙ f'(output)`, to both branches:
/// `grad_inner` receives it and `grad_input (=|+=)` it.
///
/// # Panics
/// If the lengths differ, or the activation is not [fusable](Activation::fusable).
pub fn residual_backward<T: Float>(
    grad_input: Option<(&mut [T], Accum)>,
    grad_inner: &mut [T],
    output: &[T],
    grad_output: &[T],
    activation: Activation,
) {
    check_len("residual grad_inner", grad_inner.len(), grad_output.len());
    check_len("residual output", output.len(), grad_output.len());
    assert!(
        activation.fusable(),
        "a residual block fuses only an activation whose derivative is a function of its output"
    );
    if let Some((grad_input, _)) = &grad_input {
        check_len("residual grad_input", grad_input.len(), grad_output.len());
    }
    match grad_input {
        // `grad_output` and `output` read, `grad_inner` written.
        None => for_value_blocks(grad_inner, activation.cost(), 3, &|first, grad_inner| {
            let n = grad_inner.len();
            let (output, grad_output) = (&output[first..][..n], &grad_output[first..][..n]);
            route_vectorized(None, grad_inner, output, grad_output, activation);
        }),
        Some((grad_input, accum)) => {
            // `grad_output` and `output` read, `grad_inner` written, the skip's gradient
            // stored.
            split_batch(
                grad_output.len(),
                pass_cost(activation.cost(), 3 + stored(accum)),
                (grad_inner, 1),
                (grad_input, 1),
                &|first, grad_inner, grad_input| {
                    let n = grad_inner.len();
                    let (output, grad_output) = (&output[first..][..n], &grad_output[first..][..n]);
                    route_vectorized(
                        Some((grad_input, accum)),
                        grad_inner,
                        output,
                        grad_output,
                        activation,
                    );
                },
            );
        }
    }
}

/// One thread's part of [`residual_backward`], with the activation made a constant.
fn route_vectorized<T: Float>(
    grad_input: Option<(&mut [T], Accum)>,
    grad_inner: &mut [T],
    output: &[T],
    grad_output: &[T],
    activation: Activation,
) {
    vectorized(
        #[inline(always)]
        || match activation {
            // With the activation a constant, the loops vectorise.
            Activation::Identity => route(grad_input, grad_inner, output, grad_output, |g, _| g),
            Activation::Relu => route(grad_input, grad_inner, output, grad_output, |g, y| {
                g * Activation::Relu.derivative_from_output(y)
            }),
            other => route(grad_input, grad_inner, output, grad_output, |g, y| {
                g * other.derivative_from_output(y)
            }),
        },
    );
}

/// [`residual_backward`] with the derivative `d(g, y)` a constant function.
#[inline(always)]
fn route<T: Float>(
    grad_input: Option<(&mut [T], Accum)>,
    grad_inner: &mut [T],
    output: &[T],
    grad_output: &[T],
    d: impl Fn(T, T) -> T,
) {
    let n = grad_inner.len();
    let (output, grad_output) = (&output[..n], &grad_output[..n]);
    match grad_input {
        None => {
            for i in 0..n {
                grad_inner[i] = d(grad_output[i], output[i]);
            }
        }
        Some((grad_input, accum)) => {
            let grad_input = &mut grad_input[..n];
            for i in 0..n {
                let g = d(grad_output[i], output[i]);
                grad_inner[i] = g;
                store(&mut grad_input[i], g, accum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{values, FUSABLE};
    use super::super::{activation_backward, activation_forward, sum_backward, sum_forward};
    use super::*;

    #[test]
    fn gradient_reaches_both_branches() {
        let mut y = [0.0; 2];
        sum_forward(&mut y, [&[1.0, 2.0], &[10.0, 20.0]], Activation::Identity);
        assert_eq!(y, [11.0, 22.0]);
        let mut gx = [1.0, 1.0];
        let mut g_inner = [0.0; 2];
        residual_backward(
            Some((&mut gx, Accum::Add)),
            &mut g_inner,
            &y,
            &[3.0, 4.0],
            Activation::Identity,
        );
        assert_eq!(gx, [4.0, 5.0]);
        assert_eq!(g_inner, [3.0, 4.0]);
    }

    /// Passes long enough to be split across two threads (an odd length: unequal
    /// halves) give every value its definition: a half that read the other's values
    /// would not.
    #[test]
    fn split_passes_give_each_value_its_own() {
        let n = 150_001;
        // The cheapest of the passes below, a replacing sum's gradient, splits.
        assert!(pass_cost(1.0, 2) * n as f64 >= super::super::PARALLEL_MIN_FLOPS);
        let (x, inner, g) = (values(n, 1), values(n, 2), values(n, 3));
        let relu = Activation::Relu;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let mut y = vec![0.0; n];
            sum_forward(&mut y, [&x, &inner], relu);
            for i in 0..n {
                assert_eq!(y[i], relu.apply(x[i] + inner[i]), "forward at {i}");
            }
            for accum in [None, Some(Accum::Replace), Some(Accum::Add)] {
                let (mut gx, mut g_inner) = (vec![0.5; n], vec![0.0; n]);
                residual_backward(accum.map(|a| (&mut gx[..], a)), &mut g_inner, &y, &g, relu);
                for i in 0..n {
                    let at_sum = g[i] * relu.derivative_from_output(y[i]);
                    assert_eq!(g_inner[i], at_sum, "{accum:?} at {i}");
                    let skip = match accum {
                        None => 0.5,
                        Some(Accum::Replace) => at_sum,
                        Some(Accum::Add) => 0.5 + at_sum,
                    };
                    assert_eq!(gx[i], skip, "{accum:?} at {i}");
                }
            }
            let mut gi = vec![0.5; n];
            sum_backward(&mut gi, Accum::Add, &g);
            assert!(gi.iter().zip(&g).all(|(&a, &b)| a == 0.5 + b));
            sum_backward(&mut gi, Accum::Replace, &x);
            assert_eq!(gi, x);
        });
    }

    /// A fused activation gives the values of the sum and then the activation layer,
    /// bit for bit, whichever way the skip's gradient is stored.
    #[test]
    fn fused_activation_is_the_sum_then_the_activation() {
        let n = 37;
        let (x, inner, g) = (values(n, 1), values(n, 2), values(n, 3));
        for activation in FUSABLE {
            let mut sum = vec![0.0; n];
            sum_forward(&mut sum, [&x, &inner], Activation::Identity);
            let mut y = vec![0.0; n];
            activation_forward(activation, &mut y, &sum);
            let mut fused_y = vec![0.0; n];
            sum_forward(&mut fused_y, [&x, &inner], activation);
            assert_eq!(fused_y, y, "{activation:?} forward");
            let mut g_sum = vec![0.0; n];
            activation_backward(activation, &mut g_sum, Accum::Replace, &sum, &y, &g);
            for accum in [None, Some(Accum::Replace), Some(Accum::Add)] {
                let (mut gx, mut g_inner) = (vec![0.5; n], vec![0.0; n]);
                let (mut fused_gx, mut fused_inner) = (vec![0.5; n], vec![0.0; n]);
                let skip = |gx| accum.map(|a| (gx, a));
                residual_backward(
                    skip(&mut gx[..]),
                    &mut g_inner,
                    &sum,
                    &g_sum,
                    Activation::Identity,
                );
                residual_backward(
                    skip(&mut fused_gx[..]),
                    &mut fused_inner,
                    &y,
                    &g,
                    activation,
                );
                assert_eq!(fused_inner, g_inner, "{activation:?}");
                assert_eq!(fused_gx, gx, "{activation:?} {accum:?}");
            }
        }
    }
}
