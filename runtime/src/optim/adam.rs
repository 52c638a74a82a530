use super::{
    check_lengths, check_lr, check_non_negative, check_range, in_halves, restore_buffer, state,
    Optimizer,
};
use crate::train::ResumeState;
use crate::{Float, Result};

/// The moment estimates Adam and AdamW share.
#[derive(Debug, Clone)]
struct Moments<T> {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    m: Vec<T>,
    v: Vec<T>,
    t: i32,
}

impl<T: Float> Moments<T> {
    fn save_state(&self, state: &mut ResumeState<T>) -> Result<()> {
        state.put_number("lr", self.lr);
        state.put_count("t", u64::try_from(self.t).unwrap_or(0));
        state.put_tensor("m", &self.m);
        state.put_tensor("v", &self.v);
        Ok(())
    }

    fn restore_state(&mut self, state: &ResumeState<T>, params: usize) -> Result<()> {
        let lr = state.number("lr")?;
        let t = i32::try_from(state.count("t")?).unwrap_or(i32::MAX);
        let mut restored = self.clone();
        restore_buffer(&mut restored.m, state, "m", params)?;
        restore_buffer(&mut restored.v, state, "v", params)?;
        (restored.lr, restored.t) = (lr, t);
        *self = restored;
        Ok(())
    }

    fn new(lr: f64, weight_decay: f64) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            m: Vec::new(),
            v: Vec::new(),
            t: 0,
        }
    }

    /// One step; `decoupled` selects AdamW's `p ← p(1 - lr·λ)` over Adam's `g ← g + λp`.
    fn step(&mut self, params: &mut [T], grads: &[T], decoupled: bool) -> Result<()> {
        check_lengths(params.len(), grads.len())?;
        check_lr::<T>(self.lr)?;
        check_range(
            "beta1",
            self.beta1,
            (0.0..1.0).contains(&self.beta1),
            "must be in [0, 1)",
        )?;
        check_range(
            "beta2",
            self.beta2,
            (0.0..1.0).contains(&self.beta2),
            "must be in [0, 1)",
        )?;
        check_non_negative::<T>("eps", self.eps)?;
        check_non_negative::<T>("weight decay", self.weight_decay)?;
        state(&mut self.m, params.len());
        state(&mut self.v, params.len());
        self.t = self.t.saturating_add(1);
        let (b1, b2) = (T::from_f64(self.beta1), T::from_f64(self.beta2));
        let (one_m_b1, one_m_b2) = (T::from_f64(1.0 - self.beta1), T::from_f64(1.0 - self.beta2));
        let step_size = T::from_f64(self.lr / (1.0 - self.beta1.powi(self.t)));
        let inv_sqrt_bc2 = T::from_f64(1.0 / (1.0 - self.beta2.powi(self.t)).sqrt());
        let eps = T::from_f64(self.eps);
        let (coupled, shrink) = if decoupled {
            (T::ZERO, T::from_f64(1.0 - self.lr * self.weight_decay))
        } else {
            (T::from_f64(self.weight_decay), T::ONE)
        };
        in_halves(
            params,
            grads,
            [&mut self.m, &mut self.v],
            #[inline(always)]
            |params, grads, [m, v]| {
                for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(m).zip(v) {
                    let g = g + coupled * *p;
                    *m = b1 * *m + one_m_b1 * g;
                    *v = b2 * *v + one_m_b2 * g * g;
                    *p = *p * shrink - step_size * *m / (v.sqrt() * inv_sqrt_bc2 + eps);
                }
            },
        );
        Ok(())
    }
}

macro_rules! adam_builders {
    ($name:ident) => {
        /// Coefficients of the running averages of the gradient and its square
        /// (default 0.9, 0.999).
        #[doc = ""]
        #[doc = concat!("```\nuse kiln_runtime::optim::{", stringify!($name), ", Optimizer};\nlet mut p = [1.0_f64];\n", stringify!($name), "::new(0.1).weight_decay(0.0).betas(0.5, 0.5).step(&mut p, &[2.0]).unwrap();\nassert!((p[0] - 0.9).abs() < 1e-6); // a first step is lr, whatever the betas\nassert!(", stringify!($name), "::<f64>::new(0.1).betas(1.5, 0.5).step(&mut p, &[2.0]).is_err());\n```")]
        pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
            self.0.beta1 = beta1;
            self.0.beta2 = beta2;
            self
        }

        /// Term added to the denominator (default 1e-8).
        #[doc = ""]
        #[doc = concat!("```\nuse kiln_runtime::optim::{", stringify!($name), ", Optimizer};\nlet mut p = [1.0_f64];\n", stringify!($name), "::new(0.1).weight_decay(0.0).eps(1.0).step(&mut p, &[1.0]).unwrap();\nassert!((p[0] - 0.95).abs() < 1e-9); // lr · m̂ / (√v̂ + ε) = 0.1 · 1 / 2\n```")]
        pub fn eps(mut self, eps: f64) -> Self {
            self.0.eps = eps;
            self
        }

        /// Weight decay `λ`.
        #[doc = ""]
        #[doc = concat!("```\nuse kiln_runtime::optim::{", stringify!($name), ", Optimizer};\nlet mut p = [1.0_f64];\n", stringify!($name), "::new(0.1).weight_decay(1.0).step(&mut p, &[0.0]).unwrap();\nassert!((p[0] - 0.9).abs() < 1e-6); // Adam: g = λp, a first step of lr; AdamW: p(1 − lr·λ)\n```")]
        pub fn weight_decay(mut self, weight_decay: f64) -> Self {
            self.0.weight_decay = weight_decay;
            self
        }
    };
}

/// Adam, as `torch.optim.Adam`: bias-corrected first and second moments, optional L2
/// weight decay added to the gradient.
///
/// ```
/// use kiln_runtime::optim::{Adam, Optimizer};
/// let mut opt = Adam::new(1e-3);
/// let mut p = [1.0_f32, 2.0];
/// opt.step(&mut p, &[0.1, -0.1]).unwrap();
/// assert!(p[0] < 1.0 && p[1] > 2.0);
/// ```
#[derive(Debug, Clone)]
pub struct Adam<T = f32>(Moments<T>);

impl<T: Float> Adam<T> {
    /// Adam with learning rate `lr` and PyTorch's defaults.
    ///
    /// ```
    /// use kiln_runtime::optim::{Adam, Optimizer};
    /// let mut opt = Adam::new(1e-3);
    /// assert_eq!(opt.learning_rate(), 1e-3);
    /// let mut p = [0.0_f32];
    /// opt.step(&mut p, &[-3.0]).unwrap();
    /// assert!((p[0] - 1e-3).abs() < 1e-7); // a first step of lr against the gradient
    /// ```
    pub fn new(lr: f64) -> Self {
        Self(Moments::new(lr, 0.0))
    }
    adam_builders!(Adam);
}

impl<T: Float> Optimizer<T> for Adam<T> {
    fn step(&mut self, params: &mut [T], grads: &[T]) -> Result<()> {
        self.0.step(params, grads, false)
    }
    fn learning_rate(&self) -> f64 {
        self.0.lr
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.0.lr = lr;
    }
    fn save_state(&self, state: &mut ResumeState<T>) -> Result<()> {
        self.0.save_state(state)
    }
    fn restore_state(&mut self, state: &ResumeState<T>, params: usize) -> Result<()> {
        self.0.restore_state(state, params)
    }
}

/// AdamW, as `torch.optim.AdamW`: Adam with decoupled weight decay
/// `p ← p(1 - lr·λ)` (default λ = 0.01).
///
/// ```
/// use kiln_runtime::optim::{AdamW, Optimizer};
/// let mut opt = AdamW::new(0.1).betas(0.9, 0.99).eps(1e-8).weight_decay(0.5);
/// let mut p = [2.0_f32];
/// opt.step(&mut p, &[0.0]).unwrap(); // no gradient: only the decay, p·(1 − 0.1·0.5)
/// assert_eq!(p[0], 1.9);
/// ```
#[derive(Debug, Clone)]
pub struct AdamW<T = f32>(Moments<T>);

impl<T: Float> AdamW<T> {
    /// AdamW with learning rate `lr` and PyTorch's defaults.
    ///
    /// ```
    /// use kiln_runtime::optim::{AdamW, Optimizer};
    /// let mut p = [1.0_f64];
    /// AdamW::new(0.1).step(&mut p, &[0.0]).unwrap(); // the default decay, 0.01
    /// assert!((p[0] - (1.0 - 0.1 * 0.01)).abs() < 1e-12);
    /// ```
    pub fn new(lr: f64) -> Self {
        Self(Moments::new(lr, 0.01))
    }
    adam_builders!(AdamW);
}

impl<T: Float> Optimizer<T> for AdamW<T> {
    fn step(&mut self, params: &mut [T], grads: &[T]) -> Result<()> {
        self.0.step(params, grads, true)
    }
    fn learning_rate(&self) -> f64 {
        self.0.lr
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.0.lr = lr;
    }
    fn save_state(&self, state: &mut ResumeState<T>) -> Result<()> {
        self.0.save_state(state)
    }
    fn restore_state(&mut self, state: &ResumeState<T>, params: usize) -> Result<()> {
        self.0.restore_state(state, params)
    }
}
