//! Optimisers: each step is one pass over the model's contiguous parameter and gradient
//! buffers, with state buffers sized on the first step and reused after.
//!
//! The update rules are PyTorch's (`torch.optim.SGD`, `Adam`, `AdamW`, `RMSprop`), with
//! the same defaults, so hyper-parameters carry over.
//!
//! ```
//! use kiln::prelude::*;
//! kiln::model! { struct Net { input: [2], out: Dense(1) } }
//! let x = TensorRef::<f64, Shape1<2>>::new(&[1.0, -1.0])?;
//! // Chosen at run time: a boxed optimiser trains as the one inside.
//! let choices: [Box<dyn Optimizer<f64>>; 4] = [
//!     Box::new(Sgd::new(0.1).momentum(0.9)),
//!     Box::new(Adam::new(0.1)),
//!     Box::new(AdamW::new(0.1)),
//!     Box::new(RmsProp::new(0.01)),
//! ];
//! for mut optimizer in choices {
//!     let mut net = Net::<f64>::new(0);
//!     let first = net.train_step(x, &[1.0][..], &Mse::default(), &mut optimizer)?;
//!     for _ in 0..20 {
//!         net.train_step(x, &[1.0][..], &Mse::default(), &mut optimizer)?;
//!     }
//!     assert!(net.evaluate_loss(x, &[1.0][..], &Mse::default())? < first);
//! }
//! # Ok::<(), kiln::Error>(())
//! ```

mod adam;
mod clip;
mod rmsprop;
mod schedule;
mod sgd;

pub use adam::{Adam, AdamW};
pub use clip::{global_norm, GradClip};
pub use rmsprop::RmsProp;
pub use schedule::{Constant, CosineAnnealing, LrSchedule, StepLr, WarmupCosine};
pub use sgd::Sgd;

use crate::simd::vectorized;
use crate::train::ResumeState;
use crate::{Error, Float, Result};

/// Updates parameters from their gradients.
///
/// ```
/// use kiln_runtime::optim::Optimizer;
/// use kiln_runtime::train::ResumeState;
/// use kiln_runtime::{Float, Result};
///
/// /// Sign descent: p ← p − lr·sign(g), with no state of its own.
/// struct SignSgd(f64);
///
/// impl<T: Float> Optimizer<T> for SignSgd {
///     fn step(&mut self, params: &mut [T], grads: &[T]) -> Result<()> {
///         let lr = T::from_f64(self.0);
///         for (p, &g) in params.iter_mut().zip(grads) {
///             *p -= lr * g.signum0();
///         }
///         Ok(())
///     }
///     fn learning_rate(&self) -> f64 {
///         self.0
///     }
///     fn set_learning_rate(&mut self, lr: f64) {
///         self.0 = lr;
///     }
///     // So that fit can back training up and resume it: the rate is all there is.
///     fn save_state(&self, state: &mut ResumeState<T>) -> Result<()> {
///         state.put_number("lr", self.0);
///         Ok(())
///     }
///     fn restore_state(&mut self, state: &ResumeState<T>, _params: usize) -> Result<()> {
///         self.0 = state.number("lr")?;
///         Ok(())
///     }
/// }
///
/// let mut p = [1.0_f32, 1.0];
/// SignSgd(0.5).step(&mut p, &[3.0, -0.1])?;
/// assert_eq!(p, [0.5, 1.5]);
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub trait Optimizer<T: Float> {
    /// One update of `params` from `grads` (same length, same order).
    ///
    /// Fails, without touching `params`, if a hyper-parameter is out of its domain or
    /// the buffers differ in length.
    fn step(&mut self, params: &mut [T], grads: &[T]) -> Result<()>;
    /// The current learning rate.
    fn learning_rate(&self) -> f64;
    /// Changes the learning rate (what schedules call between epochs).
    fn set_learning_rate(&mut self, lr: f64);
    /// `Some(rate)` if [`step`](Self::step) is exactly `p ← p − rate·g` for every
    /// parameter and keeps no state: plain SGD. A training step then applies the update
    /// inside the backward pass, as each layer's gradient is formed (a dense layer adds
    /// `−rate·gᵀx` straight into its weight), instead of writing every gradient out and
    /// reading it back. `None` (the default) when the rule is anything else or a setting
    /// is invalid, so that [`step`](Self::step) reports it.
    fn linear_step(&self) -> Option<f64> {
        None
    }
    /// Writes what the optimiser has learnt — its learning rate, step count and moment
    /// buffers — into `state`, for a backup that [`fit`](crate::train::fit) resumes from
    /// bit for bit. The hyper-parameters are configuration and are not written. The
    /// default refuses, so that an optimiser with state of its own is never resumed
    /// without it.
    fn save_state(&self, state: &mut ResumeState<T>) -> Result<()> {
        let _ = state;
        Err(Error::Unsupported(
            "this optimiser does not implement save_state, so training with it cannot be backed up",
        ))
    }
    /// Puts back what [`save_state`](Self::save_state) wrote, for a model of `params`
    /// parameters.
    fn restore_state(&mut self, state: &ResumeState<T>, params: usize) -> Result<()> {
        let _ = (state, params);
        Err(Error::Unsupported(
            "this optimiser does not implement restore_state, so training with it cannot be resumed",
        ))
    }
}

/// An optimiser chosen at run time (from a flag, a configuration file) trains as the
/// one inside: every method is the boxed optimiser's own, plain SGD's update inside the
/// backward pass included.
impl<T: Float, O: Optimizer<T> + ?Sized> Optimizer<T> for Box<O> {
    fn step(&mut self, params: &mut [T], grads: &[T]) -> Result<()> {
        (**self).step(params, grads)
    }
    fn learning_rate(&self) -> f64 {
        (**self).learning_rate()
    }
    fn set_learning_rate(&mut self, lr: f64) {
        (**self).set_learning_rate(lr);
    }
    fn linear_step(&self) -> Option<f64> {
        (**self).linear_step()
    }
    fn save_state(&self, state: &mut ResumeState<T>) -> Result<()> {
        (**self).save_state(state)
    }
    fn restore_state(&mut self, state: &ResumeState<T>, params: usize) -> Result<()> {
        (**self).restore_state(state, params)
    }
}

/// Reads a state buffer saved by [`save_buffer`]: empty (the optimiser had not stepped)
/// or one value per parameter.
pub(crate) fn restore_buffer<T: Float>(
    buffer: &mut Vec<T>,
    state: &ResumeState<T>,
    key: &str,
    params: usize,
) -> Result<()> {
    let values = match state.optional_tensor(key) {
        Some([]) | None => &[][..],
        Some(_) => state.tensor(key, params)?,
    };
    buffer.clear();
    buffer.extend_from_slice(values);
    Ok(())
}

/// `acc ← acc + weight·values`.
///
/// # Panics
/// If the buffers differ in length.
pub(crate) fn add_scaled<T: Float>(acc: &mut [T], values: &[T], weight: T) {
    assert_eq!(acc.len(), values.len(), "buffers differ");
    in_halves(
        acc,
        values,
        [],
        #[inline(always)]
        |acc, values, []| {
            for (a, &v) in acc.iter_mut().zip(values) {
                *a += weight * v;
            }
        },
    );
}

/// `params ← params − rate·grads`, the update an optimiser with a
/// [`linear_step`](Optimizer::linear_step) makes, for the layers that apply it inside
/// the backward pass.
///
/// # Panics
/// If the buffers differ in length.
///
/// ```
/// use kiln_runtime::optim::apply_linear_step;
/// let mut p = [1.0_f64, 2.0];
/// apply_linear_step(&mut p, &[10.0, -10.0], 0.1);
/// assert_eq!(p, [0.0, 3.0]);
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn apply_linear_step<T: Float>(params: &mut [T], grads: &[T], rate: T) {
    assert_eq!(params.len(), grads.len(), "parameters and gradients differ");
    in_halves(
        params,
        grads,
        [],
        #[inline(always)]
        |params, grads, []| {
            for (p, &g) in params.iter_mut().zip(grads) {
                *p -= rate * g;
            }
        },
    );
}

pub(crate) fn check_lengths(params: usize, grads: usize) -> Result<()> {
    if params == grads {
        Ok(())
    } else {
        Err(Error::ParameterLength {
            expected: params,
            actual: grads,
        })
    }
}

pub(crate) fn check_range(
    name: &'static str,
    value: f64,
    ok: bool,
    reason: &'static str,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidHyperParameter {
            name,
            value,
            reason,
        })
    }
}

/// A setting of at least 0 that stays finite in the model's element type (1e39 is
/// finite as an f64 but infinite as an f32, and would turn every parameter it touches
/// into infinity or NaN).
pub(crate) fn check_non_negative<T: Float>(name: &'static str, value: f64) -> Result<()> {
    check_range(
        name,
        value,
        value >= 0.0 && T::from_f64(value).is_finite(),
        "must be >= 0 and finite in the model's element type",
    )
}

pub(crate) fn check_lr<T: Float>(lr: f64) -> Result<()> {
    check_non_negative::<T>("learning rate", lr)
}

/// Sizes a state buffer on the first step (and again only if the model changes).
pub(crate) fn state<T: Float>(buffer: &mut Vec<T>, len: usize) {
    if buffer.len() != len {
        buffer.clear();
        buffer.resize(len, T::ZERO);
    }
}

/// Below this many parameters an update runs on the calling thread: the pass is a
/// few loads and stores per value, and handing half of a small one to another thread
/// costs more than it saves.
pub(crate) const PARALLEL_MIN_PARAMS: usize = 1 << 16;

/// Runs `body(params, grads, states)` over the buffers in two halves on rayon's threads
/// for large models, whole otherwise. Updates are element-wise, so the split changes no
/// value. (The 784-1024-1024-10 MLP's SGD pass streams 22 MB and was 3.5 % of its
/// training step on one thread.)
/// Each half runs [`vectorized`]: `body` should be an `#[inline(always)]` closure.
pub(crate) fn in_halves<T: Float, const N: usize>(
    params: &mut [T],
    grads: &[T],
    states: [&mut [T]; N],
    body: impl Fn(&mut [T], &[T], [&mut [T]; N]) + Sync,
) {
    let body = |params: &mut [T], grads: &[T], states: [&mut [T]; N]| {
        vectorized(
            #[inline(always)]
            || body(params, grads, states),
        )
    };
    if params.len() < PARALLEL_MIN_PARAMS {
        body(params, grads, states);
        return;
    }
    let mid = params.len() / 2;
    let (p0, p1) = params.split_at_mut(mid);
    let (g0, g1) = grads.split_at(mid);
    let mut halves = states.map(|s| {
        let (a, b) = s.split_at_mut(mid);
        (Some(a), Some(b))
    });
    let s0 = std::array::from_fn(|i| halves[i].0.take().expect("each half once"));
    let s1 = std::array::from_fn(|i| halves[i].1.take().expect("each half once"));
    crate::layers::join(|| body(p0, g0, s0), || body(p1, g1, s1));
}

#[cfg(test)]
mod tests {
    //! Each optimiser minimises a convex quadratic, and matches PyTorch's update rule
    //! written out by hand for two steps.
    use super::*;

    /// Gradient of f(p) = Σ (i+1) (p_i - 1)^2 / 2.
    fn quadratic_grad(p: &[f64]) -> Vec<f64> {
        p.iter()
            .enumerate()
            .map(|(i, &v)| (i as f64 + 1.0) * (v - 1.0))
            .collect()
    }

    fn minimise(opt: &mut dyn Optimizer<f64>, steps: usize) -> Vec<f64> {
        let mut p = vec![0.0; 4];
        for _ in 0..steps {
            let g = quadratic_grad(&p);
            opt.step(&mut p, &g).unwrap();
        }
        p
    }

    #[test]
    fn a_boxed_optimiser_is_the_one_inside() {
        let mut boxed: Box<dyn Optimizer<f64>> = Box::new(Adam::new(0.1));
        let mut plain = Adam::new(0.1);
        assert_eq!(minimise(&mut boxed, 50), minimise(&mut plain, 50));
        let sgd: Box<dyn Optimizer<f64>> = Box::new(Sgd::new(0.1));
        assert_eq!(sgd.linear_step(), Some(0.1));
        let mut state = ResumeState::new();
        boxed.save_state(&mut state).unwrap();
        let mut restored: Box<dyn Optimizer<f64>> = Box::new(Adam::new(0.1));
        restored.restore_state(&state, 4).unwrap();
        assert_eq!(minimise(&mut restored, 10), minimise(&mut boxed, 10));
        boxed.set_learning_rate(0.5);
        assert_eq!(boxed.learning_rate(), 0.5);
    }

    #[test]
    fn every_optimiser_converges_on_a_quadratic() {
        let mut sgd = Sgd::new(0.1);
        let mut momentum = Sgd::new(0.05).momentum(0.9);
        let mut nesterov = Sgd::new(0.05).momentum(0.9).nesterov(true);
        let mut adam = Adam::new(0.05);
        let mut adamw = AdamW::new(0.05).weight_decay(0.0);
        let mut rms = RmsProp::new(0.01);
        let mut rms_full = RmsProp::new(0.01).momentum(0.5).centered(true);
        let opts: [&mut dyn Optimizer<f64>; 7] = [
            &mut sgd,
            &mut momentum,
            &mut nesterov,
            &mut adam,
            &mut adamw,
            &mut rms,
            &mut rms_full,
        ];
        for opt in opts {
            let p = minimise(opt, 2000);
            for v in p {
                assert!((v - 1.0).abs() < 1e-3, "{v}");
            }
        }
    }

    #[test]
    fn sgd_momentum_nesterov_and_decay_follow_pytorch() {
        // torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
        let mut opt = Sgd::new(0.1)
            .momentum(0.9)
            .nesterov(true)
            .weight_decay(0.01);
        let mut p = [2.0_f64];
        opt.step(&mut p, &[1.0]).unwrap();
        // g = 1 + 0.01*2 = 1.02; buf = 1.02; g + 0.9 buf = 1.938
        assert!((p[0] - (2.0 - 0.1 * 1.938)).abs() < 1e-15);
        let p1 = p[0];
        opt.step(&mut p, &[0.5]).unwrap();
        let g = 0.5 + 0.01 * p1;
        let buf = 0.9 * 1.02 + g;
        assert!((p[0] - (p1 - 0.1 * (g + 0.9 * buf))).abs() < 1e-15);
    }

    #[test]
    fn adam_first_steps_follow_pytorch() {
        let mut opt = Adam::new(0.1);
        let mut p = [1.0_f64];
        opt.step(&mut p, &[0.5]).unwrap();
        // Bias correction makes the first step lr * g / (|g| + eps') ~ lr.
        assert!((p[0] - (1.0 - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-12);
        let mut opt = AdamW::new(0.1);
        let mut p = [1.0_f64];
        opt.step(&mut p, &[0.5]).unwrap();
        let decayed = 1.0 * (1.0 - 0.1 * 0.01);
        assert!((p[0] - (decayed - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-12);
    }

    #[test]
    fn bad_hyper_parameters_are_errors_and_leave_params_alone() {
        let mut p = [1.0_f32];
        assert!(Sgd::new(-1.0).step(&mut p, &[1.0]).is_err());
        assert!(Adam::new(0.1)
            .betas(1.0, 0.999)
            .step(&mut p, &[1.0])
            .is_err());
        assert!(RmsProp::new(0.1).alpha(-0.1).step(&mut p, &[1.0]).is_err());
        assert!(Sgd::new(0.1).step(&mut p, &[1.0, 2.0]).is_err());
        assert_eq!(p, [1.0]);
    }

    #[test]
    fn a_large_model_updated_in_two_halves_matches_small_pieces() {
        // 200,000 parameters take the two-thread path; pieces of 1,000 do not.
        let n = 200_000;
        let grads: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let start: Vec<f32> = (0..n)
            .map(|i| ((i * 11) % 23) as f32 / 11.0 - 1.0)
            .collect();
        type Make = fn() -> Box<dyn Optimizer<f32>>;
        let makes: [Make; 3] = [
            || Box::new(Sgd::new(0.1).weight_decay(0.01)),
            || Box::new(Sgd::new(0.1).momentum(0.9).nesterov(true)),
            || Box::new(AdamW::new(0.01)),
        ];
        for make in makes {
            let mut whole = start.clone();
            let mut opt = make();
            let mut pieces = start.clone();
            let mut opts: Vec<_> = (0..n / 1000).map(|_| make()).collect();
            for _ in 0..3 {
                opt.step(&mut whole, &grads).unwrap();
                for ((p, g), o) in pieces
                    .chunks_mut(1000)
                    .zip(grads.chunks(1000))
                    .zip(&mut opts)
                {
                    o.step(p, g).unwrap();
                }
            }
            assert_eq!(whole, pieces);
            assert_ne!(whole, start);
        }
    }
}
