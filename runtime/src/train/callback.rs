//! Callbacks: code that [`fit`](super::fit) runs at the start and end of training, of
//! each epoch and of each batch, as Keras's callbacks do. The built-ins (the
//! learning-rate schedule, the progress display, checkpoints, early stopping) are
//! callbacks too, run before the caller's in that order; [`ReduceLrOnPlateau`] and
//! [`CsvLogger`] are built-ins a caller passes.

use std::io::Write;
use std::marker::PhantomData;
use std::path::PathBuf;

use super::progress::Reporter;
use super::{EarlyStopping, EpochLog, History, Monitor, ResumeState};
use crate::optim::LrSchedule;
use crate::{Error, Float, Model, Result};

/// One batch of an epoch, as a callback sees it after the step.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// struct Losses(Vec<f64>);
/// impl Callback<f32, Net<f32>> for Losses {
///     fn on_batch_end(&mut self, log: &BatchLog, _fit: &mut FitState<'_, f32, Net<f32>>) -> kiln::Result<()> {
///         self.0.push(log.loss);
///         Ok(())
///     }
/// }
/// let mut losses = Losses(Vec::new());
/// net.fit_with_callbacks(&data, None, &CrossEntropy::default(), &mut Sgd::new(0.1), &quiet, &mut [&mut losses])?;
/// assert_eq!(losses.0.len(), 3 * 4); // three epochs of four batches (16, 16, 16, 12)
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchLog {
    /// 0-based epoch.
    pub epoch: usize,
    /// 0-based batch of the epoch.
    pub batch: usize,
    /// Batches in the epoch.
    pub batches: usize,
    /// The batch's loss.
    pub loss: f64,
    /// Mean training loss of the epoch so far.
    pub mean_loss: f64,
    /// Training accuracy of the epoch so far, for class labels.
    pub accuracy: Option<f64>,
}

/// What a callback can read and change while [`fit`](super::fit) runs.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// use kiln::train::EpochLog;
/// /// Stops after `epochs` epochs, whatever the configuration asks.
/// struct StopAfter(usize);
/// impl Callback<f32, Net<f32>> for StopAfter {
///     fn on_epoch_end(&mut self, log: &EpochLog, fit: &mut FitState<'_, f32, Net<f32>>) -> kiln::Result<()> {
///         fit.stop = log.epoch + 1 >= self.0;
///         Ok(())
///     }
/// }
/// let config = FitConfig::new(10, 16).progress(Progress::Silent);
/// let history = net.fit_with_callbacks(&data, None, &CrossEntropy::default(), &mut Sgd::new(0.1), &config, &mut [&mut StopAfter(2)])?;
/// assert_eq!(history.epochs.len(), 2);
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct FitState<'a, T, M> {
    /// The model being trained.
    pub model: &'a mut M,
    /// The epochs so far (the current one is pushed before `on_epoch_end`).
    pub history: &'a mut History,
    /// The optimiser's learning rate: set it to change the rate for the next step.
    pub learning_rate: f64,
    /// Set to stop training after the current batch.
    pub stop: bool,
    /// Epochs `fit` was asked for.
    pub epochs: usize,
    pub(super) element: PhantomData<T>,
}

/// Code run by [`fit`](super::fit) around training, epochs and batches. Every method
/// has an empty default; an error stops training and is returned by `fit` (the model
/// keeps the parameters of its last step). `on_batch_begin` and `on_batch_end` run
/// at every step: allocating there costs what it costs in any training loop.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// /// Halves the learning rate at every epoch's start.
/// struct Halve;
/// impl Callback<f32, Net<f32>> for Halve {
///     fn on_epoch_begin(&mut self, _epoch: usize, fit: &mut FitState<'_, f32, Net<f32>>) -> kiln::Result<()> {
///         fit.learning_rate /= 2.0;
///         Ok(())
///     }
/// }
/// let history = net.fit_with_callbacks(&data, None, &CrossEntropy::default(), &mut Sgd::new(0.4), &quiet, &mut [&mut Halve])?;
/// let rates: Vec<f64> = history.epochs.iter().map(|e| e.learning_rate).collect();
/// assert_eq!(rates, [0.2, 0.1, 0.05]);
/// # Ok::<(), kiln::Error>(())
/// ```
pub trait Callback<T: Float, M: Model<T>> {
    /// Before the first epoch.
    fn on_train_begin(&mut self, _fit: &mut FitState<'_, T, M>) -> Result<()> {
        Ok(())
    }

    /// Before each epoch.
    fn on_epoch_begin(&mut self, _epoch: usize, _fit: &mut FitState<'_, T, M>) -> Result<()> {
        Ok(())
    }

    /// Before each batch's step (`batch` of `batches`).
    fn on_batch_begin(
        &mut self,
        _epoch: usize,
        _batch: usize,
        _batches: usize,
        _fit: &mut FitState<'_, T, M>,
    ) -> Result<()> {
        Ok(())
    }

    /// After each batch's step.
    fn on_batch_end(&mut self, _log: &BatchLog, _fit: &mut FitState<'_, T, M>) -> Result<()> {
        Ok(())
    }

    /// After each epoch and its validation; `log` is also the last entry of
    /// `fit.history.epochs`.
    fn on_epoch_end(&mut self, _log: &EpochLog, _fit: &mut FitState<'_, T, M>) -> Result<()> {
        Ok(())
    }

    /// After the last epoch, or after training stopped.
    fn on_train_end(&mut self, _fit: &mut FitState<'_, T, M>) -> Result<()> {
        Ok(())
    }

    /// Writes what the callback has gathered while training (a best value, a count of
    /// epochs waited) into a backup (see [`FitConfig::backup`](super::FitConfig::backup)).
    /// The default writes nothing: right for a callback without such state.
    fn save_state(&self, _state: &mut ResumeState<T>) {}

    /// Puts back what [`save_state`](Self::save_state) wrote, when `fit` resumes from a
    /// backup; runs after [`on_train_begin`](Self::on_train_begin), with `fit.history`
    /// already the backed-up history.
    fn restore_state(
        &mut self,
        _state: &ResumeState<T>,
        _fit: &mut FitState<'_, T, M>,
    ) -> Result<()> {
        Ok(())
    }
}

/// The configured learning-rate schedule, applied before each step.
pub(super) struct Schedule<'a> {
    pub schedule: &'a (dyn LrSchedule + Send + Sync),
    pub base: f64,
}

impl<T: Float, M: Model<T>> Callback<T, M> for Schedule<'_> {
    fn on_train_begin(&mut self, fit: &mut FitState<'_, T, M>) -> Result<()> {
        self.base = fit.learning_rate;
        Ok(())
    }

    fn on_batch_begin(
        &mut self,
        epoch: usize,
        batch: usize,
        batches: usize,
        fit: &mut FitState<'_, T, M>,
    ) -> Result<()> {
        fit.learning_rate = self.schedule.lr_at_step(self.base, epoch, batch, batches);
        Ok(())
    }

    fn save_state(&self, state: &mut ResumeState<T>) {
        state.put_number("base", self.base);
    }

    fn restore_state(&mut self, state: &ResumeState<T>, _: &mut FitState<'_, T, M>) -> Result<()> {
        self.base = state.number("base")?;
        Ok(())
    }
}

/// The progress bar or lines.
pub(super) struct ProgressCallback(pub Reporter);

impl<T: Float, M: Model<T>> Callback<T, M> for ProgressCallback {
    fn on_epoch_begin(&mut self, epoch: usize, _: &mut FitState<'_, T, M>) -> Result<()> {
        self.0.begin_epoch(epoch);
        Ok(())
    }

    fn on_batch_end(&mut self, log: &BatchLog, _: &mut FitState<'_, T, M>) -> Result<()> {
        self.0.step(log.mean_loss, log.accuracy);
        Ok(())
    }

    fn on_epoch_end(&mut self, log: &EpochLog, _: &mut FitState<'_, T, M>) -> Result<()> {
        self.0.end_epoch(log);
        Ok(())
    }

    fn on_train_end(&mut self, fit: &mut FitState<'_, T, M>) -> Result<()> {
        self.0.finish(fit.history);
        Ok(())
    }
}

/// Saves the model whenever its monitor improves.
pub(super) struct CheckpointCallback<'a> {
    pub path: &'a std::path::Path,
    pub monitor: Monitor,
    /// Whether it also records the best epoch (when no early stopping does).
    pub records_best: bool,
    pub best: Option<f64>,
    /// Whether this process writes the file (rank 0 of data-parallel training).
    pub write: bool,
}

impl<T: Float, M: Model<T>> Callback<T, M> for CheckpointCallback<'_> {
    fn on_epoch_end(&mut self, log: &EpochLog, fit: &mut FitState<'_, T, M>) -> Result<()> {
        if let Some(value) = self.monitor.read(log) {
            if self.monitor.improves(value, self.best, 0.0) {
                self.best = Some(value);
                if self.write {
                    fit.model.save(self.path)?;
                }
                if self.records_best {
                    fit.history.best_epoch = Some(log.epoch);
                }
            }
        }
        Ok(())
    }

    fn save_state(&self, state: &mut ResumeState<T>) {
        state.put_optional("best", self.best);
    }

    fn restore_state(&mut self, state: &ResumeState<T>, _: &mut FitState<'_, T, M>) -> Result<()> {
        self.best = state.optional_number("best");
        Ok(())
    }
}

/// Early stopping, restoring the best weights and running statistics at the end.
pub(super) struct EarlyStoppingCallback<T> {
    pub stopping: EarlyStopping,
    pub best: Option<f64>,
    pub waited: usize,
    pub saved: Option<(Vec<T>, Vec<T>)>,
}

impl<T: Float, M: Model<T>> Callback<T, M> for EarlyStoppingCallback<T> {
    fn on_epoch_end(&mut self, log: &EpochLog, fit: &mut FitState<'_, T, M>) -> Result<()> {
        let stopping = self.stopping;
        let Some(value) = stopping.monitor.read(log).filter(|v| v.is_finite()) else {
            return Ok(());
        };
        if stopping
            .monitor
            .improves(value, self.best, stopping.min_delta)
        {
            self.best = Some(value);
            self.waited = 0;
            fit.history.best_epoch = Some(log.epoch);
            if stopping.restore_best_weights {
                // The weights and the running statistics that go with them.
                let (params, buffers) = (
                    fit.model.params().as_slice(),
                    fit.model.buffers().as_slice(),
                );
                match &mut self.saved {
                    Some((p, b)) => {
                        p.copy_from_slice(params);
                        b.copy_from_slice(buffers);
                    }
                    None => self.saved = Some((params.to_vec(), buffers.to_vec())),
                }
            }
        } else {
            // As Keras: stop once `patience` epochs in a row have not improved.
            self.waited += 1;
            if self.waited >= stopping.patience {
                fit.history.stopped_early = true;
                fit.stop = true;
            }
        }
        Ok(())
    }

    fn on_train_end(&mut self, fit: &mut FitState<'_, T, M>) -> Result<()> {
        if let Some((params, buffers)) = &self.saved {
            fit.model.set_params(params)?;
            fit.model.set_buffers(buffers)?;
        }
        Ok(())
    }

    fn save_state(&self, state: &mut ResumeState<T>) {
        state.put_optional("best", self.best);
        state.put_count("waited", self.waited as u64);
        if let Some((params, buffers)) = &self.saved {
            state.put_tensor("params", params);
            state.put_tensor("buffers", buffers);
        }
    }

    fn restore_state(
        &mut self,
        state: &ResumeState<T>,
        fit: &mut FitState<'_, T, M>,
    ) -> Result<()> {
        let waited = state.size("waited")?;
        let saved = match state.optional_tensor("params") {
            None => None,
            Some(_) => Some((
                state.tensor("params", M::SPEC.param_count)?.to_vec(),
                state.tensor("buffers", M::SPEC.buffer_count)?.to_vec(),
            )),
        };
        let _ = fit;
        (self.best, self.waited, self.saved) = (state.optional_number("best"), waited, saved);
        Ok(())
    }
}

/// Multiplies the learning rate by `factor` when `monitor` has not improved for
/// `patience` epochs, counted as Keras's `ReduceLROnPlateau` counts them: each epoch
/// that does not improve adds one, and the rate drops when the count reaches
/// `patience`; of the `cooldown` epochs after a drop, all but the last go uncounted.
/// The rate never goes below `min_lr`. (PyTorch's scheduler of the same name counts
/// otherwise: it drops after more than `patience` such epochs and leaves all `cooldown`
/// epochs uncounted.)
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// let mut plateau = ReduceLrOnPlateau::new(Monitor::Loss).factor(0.5).patience(1).cooldown(2).min_lr(1e-3);
/// plateau.min_delta = 1e9; // no epoch counts as an improvement
/// let config = FitConfig::new(7, 16).progress(Progress::Silent);
/// let history = net.fit_with_callbacks(&data, None, &CrossEntropy::default(), &mut Sgd::new(0.1), &config, &mut [&mut plateau])?;
/// let rates: Vec<f64> = history.epochs.iter().map(|e| e.learning_rate).collect();
/// // Keras's counting: an epoch without improvement (patience 1) halves the rate; the
/// // cooldown's first epoch holds it, its last counts again.
/// assert_eq!(rates, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125]);
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReduceLrOnPlateau {
    /// What to watch.
    pub monitor: Monitor,
    /// The rate is multiplied by this (between 0 and 1).
    pub factor: f64,
    /// Epochs without improvement that bring a reduction (0: the first such epoch).
    pub patience: usize,
    /// The smallest change that counts as an improvement.
    pub min_delta: f64,
    /// Epochs after a reduction of which all but the last go uncounted, as in Keras.
    pub cooldown: usize,
    /// The rate never goes below this.
    pub min_lr: f64,
    best: Option<f64>,
    waited: usize,
    cooling: usize,
}

impl ReduceLrOnPlateau {
    /// Keras's defaults: factor 0.1, patience 10, min_delta 1e-4, no cooldown, min_lr 0.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
    /// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
    /// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
    /// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
    /// # let mut net = Net::<f32>::new(0);
    /// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
    /// # let loss = CrossEntropy::default();
    /// let plateau = ReduceLrOnPlateau::new(Monitor::ValLoss);
    /// assert_eq!((plateau.factor, plateau.patience, plateau.min_lr), (0.1, 10, 0.0));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn new(monitor: Monitor) -> Self {
        Self {
            monitor,
            factor: 0.1,
            patience: 10,
            min_delta: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
            best: None,
            waited: 0,
            cooling: 0,
        }
    }

    /// Sets the factor.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
    /// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
    /// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
    /// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
    /// # let mut net = Net::<f32>::new(0);
    /// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
    /// # let loss = CrossEntropy::default();
    /// let mut plateau = ReduceLrOnPlateau::new(Monitor::Loss).factor(0.5).patience(0);
    /// plateau.min_delta = 1e9; // no epoch counts as an improvement
    /// let history = net.fit_with_callbacks(&data, None, &loss, &mut Sgd::new(0.1), &quiet, &mut [&mut plateau])?;
    /// let rates: Vec<f64> = history.epochs.iter().map(|e| e.learning_rate).collect();
    /// assert_eq!(rates, [0.1, 0.1, 0.05]); // the first epoch sets the best
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Sets the patience.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
    /// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
    /// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
    /// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
    /// # let mut net = Net::<f32>::new(0);
    /// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
    /// # let loss = CrossEntropy::default();
    /// assert_eq!(ReduceLrOnPlateau::new(Monitor::Loss).patience(3).patience, 3);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }

    /// Sets the cooldown.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
    /// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
    /// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
    /// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
    /// # let mut net = Net::<f32>::new(0);
    /// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
    /// # let loss = CrossEntropy::default();
    /// assert_eq!(ReduceLrOnPlateau::new(Monitor::Loss).cooldown(2).cooldown, 2);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn cooldown(mut self, cooldown: usize) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Sets the smallest rate.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
    /// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
    /// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
    /// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
    /// # let mut net = Net::<f32>::new(0);
    /// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
    /// # let loss = CrossEntropy::default();
    /// let mut plateau = ReduceLrOnPlateau::new(Monitor::Loss).factor(0.1).patience(0).min_lr(0.02);
    /// plateau.min_delta = 1e9; // no epoch counts as an improvement
    /// let config = FitConfig::new(5, 16).progress(Progress::Silent);
    /// let history = net.fit_with_callbacks(&data, None, &loss, &mut Sgd::new(0.5), &config, &mut [&mut plateau])?;
    /// let rates: Vec<f64> = history.epochs.iter().map(|e| e.learning_rate).collect();
    /// assert_eq!(rates[1..], [0.5, 0.05, 0.02, 0.02]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn min_lr(mut self, min_lr: f64) -> Self {
        self.min_lr = min_lr;
        self
    }
}

impl<T: Float, M: Model<T>> Callback<T, M> for ReduceLrOnPlateau {
    fn on_train_begin(&mut self, _: &mut FitState<'_, T, M>) -> Result<()> {
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(Error::InvalidHyperParameter {
                name: "ReduceLrOnPlateau factor",
                value: self.factor,
                reason: "must be between 0 and 1",
            });
        }
        (self.best, self.waited, self.cooling) = (None, 0, 0);
        Ok(())
    }

    fn on_epoch_end(&mut self, log: &EpochLog, fit: &mut FitState<'_, T, M>) -> Result<()> {
        let value = self.monitor.read(log).ok_or_else(|| {
            Error::Mismatch(format!(
                "ReduceLrOnPlateau monitors {} but fit has no validation data",
                self.monitor.name()
            ))
        })?;
        if self.cooling > 0 {
            self.cooling -= 1;
            self.waited = 0;
        }
        if self.monitor.improves(value, self.best, self.min_delta) {
            self.best = Some(value);
            self.waited = 0;
        } else if self.cooling == 0 {
            self.waited += 1;
            if self.waited >= self.patience && fit.learning_rate > self.min_lr {
                fit.learning_rate = (fit.learning_rate * self.factor).max(self.min_lr);
                self.cooling = self.cooldown;
                self.waited = 0;
            }
        }
        Ok(())
    }

    fn save_state(&self, state: &mut ResumeState<T>) {
        state.put_optional("best", self.best);
        state.put_count("waited", self.waited as u64);
        state.put_count("cooling", self.cooling as u64);
    }

    fn restore_state(&mut self, state: &ResumeState<T>, _: &mut FitState<'_, T, M>) -> Result<()> {
        let (waited, cooling) = (state.size("waited")?, state.size("cooling")?);
        (self.best, self.waited, self.cooling) = (state.optional_number("best"), waited, cooling);
        Ok(())
    }
}

/// Writes each epoch's metrics to a CSV file (Keras's `CSVLogger`): a header, then one
/// row per epoch as it ends, flushed, so a crash loses at most the epoch running.
/// Empty cells for what an epoch lacks (validation, accuracy of a regression, the
/// gradient norm without clipping). A model with several outputs adds each one's
/// columns after the others (`digit_loss`, `digit_accuracy`, `val_digit_loss`,
/// `val_digit_accuracy`).
///
/// ```
/// # use kiln::prelude::*;
/// kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// let path = std::env::temp_dir().join("kiln-doc-history.csv");
/// let config = FitConfig::new(2, 16).progress(Progress::Silent).validation_split(0.2);
/// Net::<f32>::new(0).fit_with_callbacks(&data, None, &CrossEntropy::default(), &mut Adam::new(1e-2), &config, &mut [&mut CsvLogger::new(&path)])?;
/// let log = std::fs::read_to_string(&path).unwrap();
/// let header = log.lines().next().unwrap();
/// assert!(header.starts_with("epoch,loss,accuracy,val_loss,val_accuracy"));
/// assert_eq!(log.lines().count(), 3);
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug)]
pub struct CsvLogger {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    /// Whether the header is written: with the first row, which names the outputs.
    header: bool,
}

impl CsvLogger {
    /// Writes to `path` (replaced if it exists) when training starts.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
    /// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
    /// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
    /// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
    /// # let mut net = Net::<f32>::new(0);
    /// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
    /// let path = std::env::temp_dir().join("kiln-doc-csv-logger.csv");
    /// net.fit_with_callbacks(&data, None, &CrossEntropy::default(), &mut Sgd::new(0.1), &quiet, &mut [&mut CsvLogger::new(&path)])?;
    /// let log = std::fs::read_to_string(&path).unwrap();
    /// assert!(log.starts_with("epoch,"));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            file: None,
            header: false,
        }
    }
}

impl CsvLogger {
    fn write_row(&mut self, log: &EpochLog) -> Result<()> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        let cell = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
        if !self.header {
            let mut header = String::from(
                "epoch,loss,accuracy,val_loss,val_accuracy,top_k,val_top_k,f1_macro,val_f1_macro,learning_rate,grad_norm,seconds",
            );
            for o in &log.outputs {
                let n = o.name;
                header.push_str(&format!(
                    ",{n}_loss,{n}_accuracy,val_{n}_loss,val_{n}_accuracy"
                ));
            }
            writeln!(file, "{header}").map_err(|e| Error::io(&self.path, &e))?;
            self.header = true;
        }
        let mut outputs = String::new();
        for o in &log.outputs {
            outputs.push_str(&format!(
                ",{},{},{},{}",
                o.loss,
                cell(o.accuracy),
                cell(o.val_loss),
                cell(o.val_accuracy)
            ));
        }
        writeln!(
            file,
            "{},{},{},{},{},{},{},{},{},{},{},{}{outputs}",
            log.epoch,
            log.loss,
            cell(log.accuracy),
            cell(log.val_loss),
            cell(log.val_accuracy),
            cell(log.top_k),
            cell(log.val_top_k),
            cell(log.f1_macro),
            cell(log.val_f1_macro),
            log.learning_rate,
            cell(log.grad_norm),
            log.seconds
        )
        .and_then(|()| file.flush())
        .map_err(|e| Error::io(&self.path, &e))
    }
}

impl<T: Float, M: Model<T>> Callback<T, M> for CsvLogger {
    fn on_train_begin(&mut self, _: &mut FitState<'_, T, M>) -> Result<()> {
        let file = std::fs::File::create(&self.path).map_err(|e| Error::io(&self.path, &e))?;
        self.file = Some(std::io::BufWriter::new(file));
        self.header = false;
        Ok(())
    }

    fn on_epoch_end(&mut self, log: &EpochLog, _: &mut FitState<'_, T, M>) -> Result<()> {
        self.write_row(log)
    }

    /// A resumed run writes the file again from the backed-up history, so that it
    /// holds each epoch once, whatever the interrupted run had written after its
    /// last backup.
    fn restore_state(&mut self, _: &ResumeState<T>, fit: &mut FitState<'_, T, M>) -> Result<()> {
        for log in &fit.history.epochs {
            self.write_row(log)?;
        }
        Ok(())
    }
}
