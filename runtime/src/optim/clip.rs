//! Gradient clipping, as PyTorch's `clip_grad_norm_` and `clip_grad_value_` (Keras's
//! `global_clipnorm` and `clipvalue`), over the model's one gradient buffer.

use crate::simd::vectorized;
use crate::{Error, Float, Result};

/// How a training step clips the gradients before the optimiser reads them.
///
/// ```
/// use kiln_runtime::optim::GradClip;
/// let mut grads = [3.0_f64, 4.0];
/// let norm = GradClip::Norm(1.0).apply(&mut grads).unwrap();
/// assert_eq!(norm, 5.0); // the norm before clipping
/// assert!((grads[0] - 0.6).abs() < 1e-6 && (grads[1] - 0.8).abs() < 1e-6);
///
/// let mut grads = [3.0_f64, -4.0];
/// GradClip::Value(1.0).apply(&mut grads).unwrap();
/// assert_eq!(grads, [1.0, -1.0]);
/// assert!(GradClip::Norm(0.0).validate().is_err());
/// assert!(GradClip::Value(1.0).apply(&mut [f64::NAN]).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GradClip {
    /// Scales every gradient by `max_norm / (norm + 1e-6)` when the global L2 norm over
    /// all parameters exceeds `max_norm` (PyTorch's `clip_grad_norm_`).
    Norm(f64),
    /// Clamps every gradient to `[-value, value]` (PyTorch's `clip_grad_value_`).
    Value(f64),
}

impl GradClip {
    /// Fails on a bound that is not a positive finite number.
    ///
    /// ```
    /// use kiln_runtime::optim::GradClip;
    /// assert_eq!(GradClip::Norm(1.0).validate()?, GradClip::Norm(1.0));
    /// assert!(GradClip::Value(f64::INFINITY).validate().is_err());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn validate(self) -> Result<Self> {
        let (name, bound) = match self {
            GradClip::Norm(bound) => ("max_norm", bound),
            GradClip::Value(bound) => ("clip value", bound),
        };
        if bound.is_finite() && bound > 0.0 {
            Ok(self)
        } else {
            Err(Error::InvalidHyperParameter {
                name,
                value: bound,
                reason: "must be a positive finite number",
            })
        }
    }

    /// Clips `grads` in place and returns their global L2 norm before clipping, or
    /// fails (leaving them as they were) if that norm is not finite.
    ///
    /// ```
    /// use kiln_runtime::optim::GradClip;
    /// let mut small = [0.3_f32, 0.4];
    /// assert!((GradClip::Norm(1.0).apply(&mut small)? - 0.5).abs() < 1e-7);
    /// assert_eq!(small, [0.3, 0.4]); // under the bound: untouched
    /// let mut bad = [1.0_f32, f32::INFINITY];
    /// assert!(GradClip::Norm(1.0).apply(&mut bad).is_err());
    /// assert_eq!(bad, [1.0, f32::INFINITY]); // as they were
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn apply<T: Float>(self, grads: &mut [T]) -> Result<f64> {
        let bound = self.validate()?;
        let norm = global_norm(grads);
        if !norm.is_finite() {
            return Err(Error::NonFiniteGradient { norm });
        }
        match bound {
            GradClip::Norm(max_norm) => {
                // PyTorch's coefficient, clamped to 1 so that small gradients stay.
                let coefficient = max_norm / (norm + 1e-6);
                if coefficient < 1.0 {
                    scale(grads, T::from_f64(coefficient));
                }
            }
            GradClip::Value(value) => clamp(grads, T::from_f64(value)),
        }
        Ok(norm)
    }
}

/// The L2 norm of `values`, summed in f64 (16 lanes, so that the pass vectorises): no
/// f32 sum of squares overflows or loses the small gradients.
///
/// ```
/// use kiln_runtime::optim::global_norm;
/// let norm = global_norm(&[3.0e30_f32, 4.0e30]); // squares far beyond f32's range
/// assert!((norm / 5.0e30 - 1.0).abs() < 1e-6);
/// ```
pub fn global_norm<T: Float>(values: &[T]) -> f64 {
    let squares = vectorized(
        #[inline(always)]
        || {
            let mut lanes = [0.0f64; 16];
            let chunks = values.chunks_exact(16);
            let rest = chunks.remainder();
            for chunk in chunks {
                for (lane, &v) in lanes.iter_mut().zip(chunk) {
                    let v = v.to_f64();
                    *lane += v * v;
                }
            }
            let tail: f64 = rest.iter().map(|&v| v.to_f64() * v.to_f64()).sum();
            lanes.iter().sum::<f64>() + tail
        },
    );
    crate::simd::clear_upper_vector_state();
    squares.sqrt()
}

fn scale<T: Float>(values: &mut [T], factor: T) {
    vectorized(
        #[inline(always)]
        || {
            for v in values.iter_mut() {
                *v *= factor;
            }
        },
    );
    crate::simd::clear_upper_vector_state();
}

fn clamp<T: Float>(values: &mut [T], bound: T) {
    vectorized(
        #[inline(always)]
        || {
            for v in values.iter_mut() {
                *v = v.max(-bound).min(bound);
            }
        },
    );
    crate::simd::clear_upper_vector_state();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_clipping_scales_only_above_the_bound() {
        let mut grads = vec![3.0f64, 4.0];
        let norm = GradClip::Norm(1.0).apply(&mut grads).unwrap();
        assert_eq!(norm, 5.0);
        let coefficient = 1.0 / (5.0 + 1e-6);
        assert_eq!(grads, [3.0 * coefficient, 4.0 * coefficient]);
        let mut small = vec![0.3f32, 0.4];
        assert!((GradClip::Norm(1.0).apply(&mut small).unwrap() - 0.5).abs() < 1e-7);
        assert_eq!(small, [0.3, 0.4]);
    }

    #[test]
    fn value_clipping_clamps_each_gradient() {
        let mut grads: Vec<f32> = (0..37).map(|i| i as f32 - 18.0).collect();
        GradClip::Value(2.5).apply(&mut grads).unwrap();
        assert!(grads.iter().all(|g| g.abs() <= 2.5));
        assert_eq!(grads[0], -2.5);
        assert_eq!(grads[18], 0.0);
        assert_eq!(grads[19], 1.0);
    }

    #[test]
    fn the_norm_of_large_f32_gradients_does_not_overflow() {
        let grads = vec![1e30f32; 100];
        assert!((global_norm(&grads) / 1e31 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn bad_bounds_and_non_finite_gradients_are_errors() {
        for clip in [
            GradClip::Norm(0.0),
            GradClip::Norm(f64::NAN),
            GradClip::Value(-1.0),
            GradClip::Value(f64::INFINITY),
        ] {
            assert!(clip.validate().is_err(), "{clip:?}");
        }
        let mut grads = vec![1.0f32, f32::NAN, 2.0];
        assert!(matches!(
            GradClip::Norm(1.0).apply(&mut grads),
            Err(Error::NonFiniteGradient { .. })
        ));
        assert_eq!(grads[0], 1.0);
    }
}
