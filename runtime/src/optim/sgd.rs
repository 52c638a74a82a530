use super::{
    check_lengths, check_lr, check_non_negative, check_range, in_halves, restore_buffer, state,
    Optimizer,
};
use crate::train::ResumeState;
use crate::{Float, Result};

/// Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight
/// decay, as `torch.optim.SGD`:
///
/// `g ← g + λp`; with momentum `b ← μb + (1-τ)g` (`b ← g` on the first step) and
/// `g ← g + μb` (Nesterov) or `g ← b`; then `p ← p - lr·g`.
///
/// ```
/// use kiln_runtime::optim::{Optimizer, Sgd};
/// let mut opt = Sgd::new(0.1).momentum(0.9);
/// let mut p = [1.0_f32];
/// opt.step(&mut p, &[2.0]).unwrap();
/// assert_eq!(p, [0.8]);
/// ```
#[derive(Debug, Clone)]
pub struct Sgd<T = f32> {
    lr: f64,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    weight_decay: f64,
    velocity: Vec<T>,
    started: bool,
}

impl<T: Float> Sgd<T> {
    /// Plain SGD with learning rate `lr`.
    ///
    /// ```
    /// use kiln_runtime::optim::{Optimizer, Sgd};
    /// let mut p = [1.0_f64];
    /// Sgd::new(0.5).step(&mut p, &[1.0]).unwrap();
    /// assert_eq!(p, [0.5]);
    /// assert!(Sgd::<f64>::new(-0.5).step(&mut p, &[1.0]).is_err());
    /// ```
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            velocity: Vec::new(),
            started: false,
        }
    }

    /// Momentum factor `μ` (default 0).
    ///
    /// ```
    /// use kiln_runtime::optim::{Optimizer, Sgd};
    /// let mut p = [1.0_f64];
    /// let mut opt = Sgd::new(0.1).momentum(0.9);
    /// opt.step(&mut p, &[1.0]).unwrap(); // b = 1
    /// opt.step(&mut p, &[1.0]).unwrap(); // b = 0.9 + 1
    /// assert!((p[0] - (1.0 - 0.1 - 0.19)).abs() < 1e-12);
    /// ```
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Dampening `τ` of the momentum (default 0).
    ///
    /// ```
    /// use kiln_runtime::optim::{Optimizer, Sgd};
    /// let mut p = [1.0_f64];
    /// let mut opt = Sgd::new(0.1).momentum(0.9).dampening(0.5);
    /// opt.step(&mut p, &[1.0]).unwrap(); // b = g on the first step
    /// opt.step(&mut p, &[1.0]).unwrap(); // b = 0.9 + 0.5·1
    /// assert!((p[0] - (1.0 - 0.1 - 0.14)).abs() < 1e-12);
    /// ```
    pub fn dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self
    }

    /// Nesterov momentum (needs momentum > 0 and no dampening).
    ///
    /// ```
    /// use kiln_runtime::optim::{Optimizer, Sgd};
    /// let mut p = [1.0_f64];
    /// Sgd::new(0.1).momentum(0.9).nesterov(true).step(&mut p, &[1.0]).unwrap();
    /// assert!((p[0] - (1.0 - 0.1 * 1.9)).abs() < 1e-12); // g + μb
    /// assert!(Sgd::<f64>::new(0.1).nesterov(true).step(&mut p, &[1.0]).is_err()); // no momentum
    /// ```
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// L2 weight decay `λ` added to the gradient (default 0).
    ///
    /// ```
    /// use kiln_runtime::optim::{Optimizer, Sgd};
    /// let mut p = [1.0_f64];
    /// Sgd::new(1.0).weight_decay(0.1).step(&mut p, &[0.0]).unwrap();
    /// assert!((p[0] - 0.9).abs() < 1e-12); // g = 0 + λp
    /// ```
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

impl<T: Float> Optimizer<T> for Sgd<T> {
    fn step(&mut self, params: &mut [T], grads: &[T]) -> Result<()> {
        check_lengths(params.len(), grads.len())?;
        check_lr::<T>(self.lr)?;
        check_non_negative::<T>("momentum", self.momentum)?;
        check_non_negative::<T>("weight decay", self.weight_decay)?;
        check_range(
            "dampening",
            self.dampening,
            (0.0..=1.0).contains(&self.dampening),
            "must be between 0 and 1",
        )?;
        check_range(
            "nesterov",
            self.momentum,
            !self.nesterov || (self.momentum > 0.0 && self.dampening == 0.0),
            "nesterov needs momentum > 0 and zero dampening",
        )?;
        let lr = T::from_f64(self.lr);
        let decay = T::from_f64(self.weight_decay);
        if self.momentum == 0.0 {
            in_halves(
                params,
                grads,
                [],
                #[inline(always)]
                |params, grads, []| {
                    for (p, &g) in params.iter_mut().zip(grads) {
                        *p -= lr * (g + decay * *p);
                    }
                },
            );
            return Ok(());
        }
        let mu = T::from_f64(self.momentum);
        let keep = T::from_f64(1.0 - self.dampening);
        state(&mut self.velocity, params.len());
        let first = !self.started;
        self.started = true;
        let nesterov = self.nesterov;
        in_halves(
            params,
            grads,
            [&mut self.velocity],
            #[inline(always)]
            |params, grads, [velocity]| {
                for ((p, &g), b) in params.iter_mut().zip(grads).zip(velocity.iter_mut()) {
                    let g = g + decay * *p;
                    *b = if first { g } else { mu * *b + keep * g };
                    let step = if nesterov { g + mu * *b } else { *b };
                    *p -= lr * step;
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

    fn linear_step(&self) -> Option<f64> {
        let plain = self.momentum == 0.0 && self.weight_decay == 0.0 && !self.nesterov;
        (plain && check_lr::<T>(self.lr).is_ok()).then_some(self.lr)
    }

    fn save_state(&self, state: &mut ResumeState<T>) -> Result<()> {
        state.put_number("lr", self.lr);
        state.put_count("started", u64::from(self.started));
        state.put_tensor("velocity", &self.velocity);
        Ok(())
    }

    fn restore_state(&mut self, state: &ResumeState<T>, params: usize) -> Result<()> {
        let lr = state.number("lr")?;
        let started = state.count("started")? != 0;
        restore_buffer(&mut self.velocity, state, "velocity", params)?;
        (self.lr, self.started) = (lr, started);
        Ok(())
    }
}
