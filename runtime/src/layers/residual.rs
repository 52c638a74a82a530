//! Residual connections: `y = x + f(x)`, where `f` is the block's inner layers.
//!
//! Backward: `dL/dx` receives `grad_output` once through the skip and once through `f`,
//! so the skip writes it first and the inner layers' backward accumulates onto it.
//!
//! # Shapes
//! `f` must preserve the shape (the macro checks it); `x`, `f(x)` and `y` have one shape.

use super::{check_len, store, Accum};
use crate::Float;

/// `output = input + inner` (the skip plus the block's last inner output).
///
/// # Panics
/// If the lengths differ.
pub fn residual_forward<T: Float>(output: &mut [T], input: &[T], inner: &[T]) {
    check_len("residual input", input.len(), output.len());
    check_len("residual inner", inner.len(), output.len());
    for ((y, &a), &b) in output.iter_mut().zip(input).zip(inner) {
        *y = a + b;
    }
}

/// Routes `grad_output` to both branches: `grad_inner = grad_output`, and
/// `grad_input (=|+=) grad_output`.
///
/// # Panics
/// If the lengths differ.
pub fn residual_backward<T: Float>(
    grad_input: Option<(&mut [T], Accum)>,
    grad_inner: &mut [T],
    grad_output: &[T],
) {
    check_len("residual grad_inner", grad_inner.len(), grad_output.len());
    grad_inner.copy_from_slice(grad_output);
    if let Some((grad_input, accum)) = grad_input {
        check_len("residual grad_input", grad_input.len(), grad_output.len());
        for (gi, &g) in grad_input.iter_mut().zip(grad_output) {
            store(gi, g, accum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_reaches_both_branches() {
        let mut y = [0.0; 2];
        residual_forward(&mut y, &[1.0, 2.0], &[10.0, 20.0]);
        assert_eq!(y, [11.0, 22.0]);
        let mut gx = [1.0, 1.0];
        let mut g_inner = [0.0; 2];
        residual_backward(Some((&mut gx, Accum::Add)), &mut g_inner, &[3.0, 4.0]);
        assert_eq!(gx, [4.0, 5.0]);
        assert_eq!(g_inner, [3.0, 4.0]);
    }
}
