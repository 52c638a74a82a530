/// A learning rate as a function of the epoch, applied between epochs with
/// [`Optimizer::set_learning_rate`](super::Optimizer::set_learning_rate).
///
/// ```
/// use kiln_runtime::optim::{CosineAnnealing, LrSchedule, StepLr};
/// let step = StepLr { step_size: 10, gamma: 0.1 };
/// assert!((step.lr_at(1.0, 25) - 0.01).abs() < 1e-12);
/// let cosine = CosineAnnealing { t_max: 10, eta_min: 0.0 };
/// assert!((cosine.lr_at(1.0, 5) - 0.5).abs() < 1e-12);
/// ```
pub trait LrSchedule {
    /// The learning rate for `epoch` (0-based) given the initial rate `base`.
    fn lr_at(&self, base: f64, epoch: usize) -> f64;

    /// The rate for step `step` of the `steps` in `epoch`, which `fit` asks before
    /// every step: [`lr_at`](Self::lr_at) of the epoch unless the schedule moves
    /// within epochs ([`WarmupCosine`]).
    fn lr_at_step(&self, base: f64, epoch: usize, _step: usize, _steps: usize) -> f64 {
        self.lr_at(base, epoch)
    }
}

/// A linear warm-up from 0 over `warmup` epochs, then a cosine decay to `eta_min` at
/// `total` epochs, step by step, as transformers train (the shape of Hugging Face's
/// `get_cosine_schedule_with_warmup`, with epochs of `fit`'s steps as its unit).
///
/// ```
/// use kiln_runtime::optim::{LrSchedule, WarmupCosine};
/// let schedule = WarmupCosine { warmup: 1.0, total: 3.0, eta_min: 0.0 };
/// // Epoch 0 of 10 steps: the third step ends 0.3 epochs in, 30 % of the way up.
/// assert!((schedule.lr_at_step(1e-3, 0, 2, 10) - 3e-4).abs() < 1e-15);
/// // Half-way through the decay, half the rate; zero at the end.
/// assert!((schedule.lr_at(1e-3, 2) - 5e-4).abs() < 1e-15);
/// assert!(schedule.lr_at(1e-3, 3).abs() < 1e-15);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosine {
    /// Epochs of linear warm-up (fractions allowed: 0.5 is half an epoch of steps).
    pub warmup: f64,
    /// Epochs until the rate reaches `eta_min`.
    pub total: f64,
    /// The final rate.
    pub eta_min: f64,
}

impl WarmupCosine {
    /// The rate at `progress` epochs (fractional) into training.
    fn at(&self, base: f64, progress: f64) -> f64 {
        if progress < self.warmup {
            return base * progress / self.warmup;
        }
        let span = (self.total - self.warmup).max(f64::MIN_POSITIVE);
        let t = ((progress - self.warmup) / span).clamp(0.0, 1.0);
        self.eta_min + (base - self.eta_min) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

impl LrSchedule for WarmupCosine {
    fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        self.at(base, epoch as f64)
    }

    fn lr_at_step(&self, base: f64, epoch: usize, step: usize, steps: usize) -> f64 {
        // The rate of the step's end, so that the first step of training is not at 0.
        self.at(base, epoch as f64 + (step + 1) as f64 / steps.max(1) as f64)
    }
}

/// The initial rate, always.
///
/// ```
/// use kiln_runtime::optim::{Constant, LrSchedule};
/// assert_eq!(Constant.lr_at(0.1, 99), 0.1);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Constant;

impl LrSchedule for Constant {
    fn lr_at(&self, base: f64, _epoch: usize) -> f64 {
        base
    }
}

/// `base · gamma^⌊epoch / step_size⌋`, as `torch.optim.lr_scheduler.StepLR`.
///
/// ```
/// use kiln_runtime::optim::{LrSchedule, StepLr};
/// let schedule = StepLr { step_size: 2, gamma: 0.5 };
/// let rates: Vec<f64> = (0..5).map(|epoch| schedule.lr_at(1.0, epoch)).collect();
/// assert_eq!(rates, [1.0, 1.0, 0.5, 0.5, 0.25]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct StepLr {
    /// Epochs between decays (at least 1).
    pub step_size: usize,
    /// Factor applied at each decay.
    pub gamma: f64,
}

impl LrSchedule for StepLr {
    fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        let decays = epoch / self.step_size.max(1);
        base * self.gamma.powi(decays.min(i32::MAX as usize) as i32)
    }
}

/// `eta_min + (base - eta_min)(1 + cos(π·epoch/t_max))/2`, the closed form of
/// `torch.optim.lr_scheduler.CosineAnnealingLR`; constant at `eta_min` after `t_max`.
///
/// ```
/// use kiln_runtime::optim::{CosineAnnealing, LrSchedule};
/// let schedule = CosineAnnealing { t_max: 4, eta_min: 0.1 };
/// assert_eq!(schedule.lr_at(1.0, 0), 1.0);
/// assert!((schedule.lr_at(1.0, 2) - 0.55).abs() < 1e-12); // half-way
/// assert_eq!(schedule.lr_at(1.0, 4), 0.1);
/// assert_eq!(schedule.lr_at(1.0, 40), 0.1);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CosineAnnealing {
    /// Epochs from the initial rate to `eta_min` (at least 1).
    pub t_max: usize,
    /// The lowest rate.
    pub eta_min: f64,
}

impl LrSchedule for CosineAnnealing {
    fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        let t_max = self.t_max.max(1);
        let progress = epoch.min(t_max) as f64 / t_max as f64;
        self.eta_min
            + (base - self.eta_min) * (1.0 + (core::f64::consts::PI * progress).cos()) / 2.0
    }
}
