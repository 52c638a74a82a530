use super::{
    check_lengths, check_lr, check_non_negative, check_range, restore_buffer, state, Optimizer,
};
use crate::simd::vectorized;
use crate::train::ResumeState;
use crate::{Float, Result};

/// RMSprop, as `torch.optim.RMSprop`:
///
/// `v ← αv + (1-α)g²`; centered: `a ← αa + (1-α)g` and `v̂ = v - a²`;
/// `d = √v̂ + ε`; with momentum `b ← μb + g/d`, `p ← p - lr·b`, else `p ← p - lr·g/d`.
///
/// ```
/// use kiln_runtime::optim::{Optimizer, RmsProp};
/// let mut opt = RmsProp::new(0.01).alpha(0.9).momentum(0.5).centered(true);
/// let mut p = [1.0_f64];
/// // First step: v = 0.1·g², a = 0.1·g, v̂ = 0.09·g², so the step is lr·g/√v̂ = lr/0.3.
/// opt.step(&mut p, &[0.5]).unwrap();
/// assert!((p[0] - (1.0 - 0.01 / 0.3)).abs() < 1e-6);
/// assert!(RmsProp::<f64>::new(0.01).alpha(1.5).step(&mut p, &[0.5]).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct RmsProp<T = f32> {
    lr: f64,
    alpha: f64,
    eps: f64,
    momentum: f64,
    centered: bool,
    weight_decay: f64,
    square_avg: Vec<T>,
    grad_avg: Vec<T>,
    velocity: Vec<T>,
}

impl<T: Float> RmsProp<T> {
    /// RMSprop with learning rate `lr` and PyTorch's defaults (α = 0.99, ε = 1e-8).
    ///
    /// ```
    /// use kiln_runtime::optim::{Optimizer, RmsProp};
    /// let mut p = [1.0_f64];
    /// RmsProp::new(0.01).step(&mut p, &[1.0]).unwrap();
    /// assert!((p[0] - (1.0 - 0.01 / 0.01f64.sqrt())).abs() < 1e-6); // v = 0.01·g²
    /// ```
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: false,
            weight_decay: 0.0,
            square_avg: Vec::new(),
            grad_avg: Vec::new(),
            velocity: Vec::new(),
        }
    }

    /// Smoothing constant `α`.
    ///
    /// ```
    /// use kiln_runtime::optim::{Optimizer, RmsProp};
    /// let mut p = [1.0_f64];
    /// RmsProp::new(0.01).alpha(0.0).step(&mut p, &[4.0]).unwrap(); // v = g²: a step of lr
    /// assert!((p[0] - 0.99).abs() < 1e-9);
    /// assert!(RmsProp::<f64>::new(0.01).alpha(1.5).step(&mut p, &[1.0]).is_err());
    /// ```
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Term added to the denominator.
    ///
    /// ```
    /// use kiln_runtime::optim::{Optimizer, RmsProp};
    /// let mut p = [1.0_f64];
    /// RmsProp::new(0.01).alpha(0.0).eps(1.0).step(&mut p, &[1.0]).unwrap();
    /// assert!((p[0] - (1.0 - 0.01 / 2.0)).abs() < 1e-12); // g / (√v + ε)
    /// ```
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Momentum factor `μ`.
    ///
    /// ```
    /// use kiln_runtime::optim::{Optimizer, RmsProp};
    /// let mut p = [1.0_f64];
    /// let mut opt = RmsProp::new(0.01).alpha(0.0).momentum(0.5);
    /// opt.step(&mut p, &[1.0]).unwrap(); // b = 1
    /// opt.step(&mut p, &[1.0]).unwrap(); // b = 0.5 + 1
    /// assert!((p[0] - (1.0 - 0.01 - 0.015)).abs() < 1e-9);
    /// ```
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Normalise by the estimated variance instead of the raw second moment.
    ///
    /// ```
    /// use kiln_runtime::optim::{Optimizer, RmsProp};
    /// let mut p = [1.0_f64];
    /// let mut q = p;
    /// RmsProp::new(0.01).alpha(0.9).step(&mut p, &[1.0]).unwrap(); // ÷ √0.1
    /// RmsProp::new(0.01).alpha(0.9).centered(true).step(&mut q, &[1.0]).unwrap(); // ÷ √0.09
    /// assert!(1.0 - q[0] > 1.0 - p[0]);
    /// ```
    pub fn centered(mut self, centered: bool) -> Self {
        self.centered = centered;
        self
    }

    /// L2 weight decay `λ` added to the gradient.
    ///
    /// ```
    /// use kiln_runtime::optim::{Optimizer, RmsProp};
    /// let mut p = [1.0_f64];
    /// RmsProp::new(0.01).alpha(0.0).weight_decay(1.0).step(&mut p, &[0.0]).unwrap();
    /// assert!((p[0] - 0.99).abs() < 1e-9); // g = λp = 1
    /// ```
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

impl<T: Float> Optimizer<T> for RmsProp<T> {
    fn step(&mut self, params: &mut [T], grads: &[T]) -> Result<()> {
        check_lengths(params.len(), grads.len())?;
        check_lr::<T>(self.lr)?;
        check_range(
            "alpha",
            self.alpha,
            (0.0..=1.0).contains(&self.alpha),
            "must be in [0, 1]",
        )?;
        check_non_negative::<T>("eps", self.eps)?;
        check_non_negative::<T>("momentum", self.momentum)?;
        check_non_negative::<T>("weight decay", self.weight_decay)?;
        let n = params.len();
        state(&mut self.square_avg, n);
        if self.centered {
            state(&mut self.grad_avg, n);
        }
        if self.momentum > 0.0 {
            state(&mut self.velocity, n);
        }
        let (lr, alpha) = (T::from_f64(self.lr), T::from_f64(self.alpha));
        let one_m_alpha = T::from_f64(1.0 - self.alpha);
        let (eps, mu, decay) = (
            T::from_f64(self.eps),
            T::from_f64(self.momentum),
            T::from_f64(self.weight_decay),
        );
        let (centered, momentum) = (self.centered, self.momentum > 0.0);
        let (square_avg, grad_avg, velocity) =
            (&mut self.square_avg, &mut self.grad_avg, &mut self.velocity);
        vectorized(
            #[inline(always)]
            || {
                for i in 0..n {
                    let g = grads[i] + decay * params[i];
                    let v = &mut square_avg[i];
                    *v = alpha * *v + one_m_alpha * g * g;
                    let mut variance = *v;
                    if centered {
                        let a = &mut grad_avg[i];
                        *a = alpha * *a + one_m_alpha * g;
                        variance -= *a * *a;
                    }
                    let scaled = g / (variance.sqrt() + eps);
                    if momentum {
                        let b = &mut velocity[i];
                        *b = mu * *b + scaled;
                        params[i] -= lr * *b;
                    } else {
                        params[i] -= lr * scaled;
                    }
                }
            },
        );
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn save_state(&self, state: &mut ResumeState<T>) -> Result<()> {
        state.put_number("lr", self.lr);
        state.put_tensor("square_avg", &self.square_avg);
        state.put_tensor("grad_avg", &self.grad_avg);
        state.put_tensor("velocity", &self.velocity);
        Ok(())
    }

    fn restore_state(&mut self, state: &ResumeState<T>, params: usize) -> Result<()> {
        let lr = state.number("lr")?;
        let mut restored = self.clone();
        restore_buffer(&mut restored.square_avg, state, "square_avg", params)?;
        restore_buffer(&mut restored.grad_avg, state, "grad_avg", params)?;
        restore_buffer(&mut restored.velocity, state, "velocity", params)?;
        restored.lr = lr;
        *self = restored;
        Ok(())
    }
}
