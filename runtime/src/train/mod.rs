//! Training like Keras' `fit`, evaluation and prediction in batches.
//!
//! [`fit`] runs epochs of shuffled minibatches through
//! [`Model::train_step`], scores a validation set after each
//! epoch, and applies what Keras calls callbacks: a learning-rate schedule, early
//! stopping (with patience, a minimum improvement and restoring the best weights) and
//! checkpointing the best model to a safetensors file. It returns a [`History`] of
//! per-epoch metrics. Progress is an `indicatif` bar on a terminal and one plain line
//! per epoch otherwise.
//!
//! With a [`Communicator`] of several ranks
//! ([`FitConfig::communicator`]), `fit` trains data-parallel: see
//! [`crate::distributed`].
//!
//! The whole loop runs on one of rayon's workers, so the kernels' parallel halves go
//! through that worker's own queue and a step allocates nothing.
//!
//! ```
//! use kiln::prelude::*;
//! kiln::model! { struct Net { input: [4], fc: Dense(16), Relu, out: Dense(2) } }
//! // The label: whether the first feature is the largest.
//! let features: Vec<f32> = (0..4 * 200).map(|i| ((i * 37) % 101) as f32 / 101.0).collect();
//! let labels: Vec<usize> = features.chunks(4).map(|x| usize::from(x[0] > x[1].max(x[2]).max(x[3]))).collect();
//! let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(2))?;
//! let (train, test) = data.split(0.2, 0);
//! let config = FitConfig::new(30, 16).progress(Progress::Silent);
//! let mut net = Net::<f32>::new(0);
//! net.fit(&train, Some(&test), &CrossEntropy::default(), &mut Adam::new(1e-2), &config)?;
//! assert!(net.evaluate(&test, &CrossEntropy::default(), 64)?.accuracy.unwrap() > 0.8);
//! # Ok::<(), kiln::Error>(())
//! ```

mod callback;
mod progress;
pub mod resume;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub use callback::{BatchLog, Callback, CsvLogger, FitState, ReduceLrOnPlateau};
pub use progress::Progress;
pub use resume::{Backup, ResumeState};

use crate::data::{Dataset, Target};
use crate::distributed::{agree, hash_words, sum_in_place, Communicator};
use crate::loss::{Loss, OutputLayout, OutputScore};
use crate::metrics::{Metric, MetricCounts};
use crate::model::SEALED;
use crate::optim::{LrSchedule, Optimizer};
use crate::{Error, Float, Model, Result, Shape, Tensor, TensorRef};

/// A quantity that early stopping and checkpointing watch.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// let config = quiet.validation_split(0.25).early_stopping(EarlyStopping::new(Monitor::ValAccuracy, 1));
/// let history = net.fit(&data, None, &CrossEntropy::default(), &mut Adam::new(1e-2), &config)?;
/// assert!(history.best_epoch.is_some()); // by validation accuracy
/// // A monitor that needs validation data, with none, is an error.
/// let config = FitConfig::new(3, 16).progress(Progress::Silent).early_stopping(EarlyStopping::new(Monitor::ValLoss, 1));
/// assert!(net.fit(&data, None, &CrossEntropy::default(), &mut Adam::new(1e-2), &config).is_err());
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    /// Training loss (lower is better).
    Loss,
    /// Validation loss (lower is better).
    ValLoss,
    /// Training accuracy (higher is better).
    Accuracy,
    /// Validation accuracy (higher is better).
    ValAccuracy,
    /// The training loss of one output of a model with several, by name (lower is
    /// better).
    OutputLoss(&'static str),
    /// One output's validation loss (lower is better).
    OutputValLoss(&'static str),
    /// One output's training accuracy (higher is better).
    OutputAccuracy(&'static str),
    /// One output's validation accuracy (higher is better).
    OutputValAccuracy(&'static str),
}

impl Monitor {
    fn read(self, log: &EpochLog) -> Option<f64> {
        let output = |name: &str| log.outputs.iter().find(|o| o.name == name);
        match self {
            Monitor::Loss => Some(log.loss),
            Monitor::ValLoss => log.val_loss,
            Monitor::Accuracy => log.accuracy,
            Monitor::ValAccuracy => log.val_accuracy,
            Monitor::OutputLoss(name) => output(name).map(|o| o.loss),
            Monitor::OutputValLoss(name) => output(name).and_then(|o| o.val_loss),
            Monitor::OutputAccuracy(name) => output(name).and_then(|o| o.accuracy),
            Monitor::OutputValAccuracy(name) => output(name).and_then(|o| o.val_accuracy),
        }
    }

    fn higher_is_better(self) -> bool {
        matches!(
            self,
            Monitor::Accuracy
                | Monitor::ValAccuracy
                | Monitor::OutputAccuracy(_)
                | Monitor::OutputValAccuracy(_)
        )
    }

    /// Whether it reads the validation data.
    fn needs_validation(self) -> bool {
        matches!(
            self,
            Monitor::ValLoss
                | Monitor::ValAccuracy
                | Monitor::OutputValLoss(_)
                | Monitor::OutputValAccuracy(_)
        )
    }

    /// The output it watches, if it watches one.
    fn output(self) -> Option<&'static str> {
        match self {
            Monitor::OutputLoss(name)
            | Monitor::OutputValLoss(name)
            | Monitor::OutputAccuracy(name)
            | Monitor::OutputValAccuracy(name) => Some(name),
            _ => None,
        }
    }

    /// Whether `value` beats `best` by more than `min_delta`.
    fn improves(self, value: f64, best: Option<f64>, min_delta: f64) -> bool {
        match best {
            None => true,
            Some(best) if self.higher_is_better() => value > best + min_delta,
            Some(best) => value < best - min_delta,
        }
    }

    /// Its name as Keras writes it: `val_loss`, `digit_accuracy`, `val_digit_loss`.
    fn name(self) -> String {
        match self {
            Monitor::Loss => "loss".into(),
            Monitor::ValLoss => "val_loss".into(),
            Monitor::Accuracy => "accuracy".into(),
            Monitor::ValAccuracy => "val_accuracy".into(),
            Monitor::OutputLoss(name) => format!("{name}_loss"),
            Monitor::OutputValLoss(name) => format!("val_{name}_loss"),
            Monitor::OutputAccuracy(name) => format!("{name}_accuracy"),
            Monitor::OutputValAccuracy(name) => format!("val_{name}_accuracy"),
        }
    }
}

/// Stops training when the monitored quantity has not improved for `patience` epochs.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// // A learning rate far too high: the loss gets worse and training stops early.
/// let stopping = EarlyStopping { min_delta: 1e-3, ..EarlyStopping::new(Monitor::Loss, 0) };
/// let config = FitConfig::new(50, 16).progress(Progress::Silent).early_stopping(stopping);
/// let history = net.fit(&data, None, &CrossEntropy::default(), &mut Sgd::new(50.0), &config)?;
/// assert!(history.stopped_early && history.epochs.len() < 50);
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStopping {
    /// What to watch.
    pub monitor: Monitor,
    /// Epochs in a row without improvement after which training stops, as Keras
    /// counts them: with 2, the second such epoch is the last; with 0, the first.
    pub patience: usize,
    /// The smallest change that counts as an improvement.
    pub min_delta: f64,
    /// Put back the weights of the best epoch, and the running statistics that went
    /// with them, when stopping (or at the end).
    pub restore_best_weights: bool,
}

impl EarlyStopping {
    /// Watches `monitor` with the given patience, no minimum delta, restoring the best
    /// weights.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
    /// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
    /// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
    /// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
    /// # let mut net = Net::<f32>::new(0);
    /// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
    /// let stopping = EarlyStopping::new(Monitor::ValLoss, 3);
    /// assert!(stopping.restore_best_weights && stopping.min_delta == 0.0);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn new(monitor: Monitor, patience: usize) -> Self {
        Self {
            monitor,
            patience,
            min_delta: 0.0,
            restore_best_weights: true,
        }
    }
}

/// Saves the model to `path` (safetensors, atomically) whenever `monitor` improves.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// let path = std::env::temp_dir().join("kiln-doc-checkpoint.safetensors");
/// let config = quiet.checkpoint(&path, Monitor::Loss);
/// assert_eq!(config.checkpoint.as_ref().map(|c| c.monitor), Some(Monitor::Loss));
/// net.fit(&data, None, &CrossEntropy::default(), &mut Adam::new(1e-2), &config)?;
/// let mut best = Net::<f32>::new(1);
/// best.load(&path)?; // the weights of the epoch with the lowest training loss
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The file to write.
    pub path: PathBuf,
    /// What decides "best".
    pub monitor: Monitor,
}

/// How [`fit`] trains.
///
/// ```
/// use kiln::prelude::*;
///
/// kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
///
/// let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// let config = FitConfig::new(5, 16)
///     .seed(1)
///     .validation_split(0.2)
///     .early_stopping(EarlyStopping::new(Monitor::ValLoss, 2))
///     .schedule(StepLr { step_size: 2, gamma: 0.5 })
///     .progress(Progress::Silent);
/// let mut net = Net::<f32>::new(0);
/// let history = net.fit(&data, None, &CrossEntropy::default(), &mut Adam::new(1e-2), &config)?;
/// assert!(history.epochs.len() <= 5);
/// assert_eq!(history.epochs[2].learning_rate, 5e-3); // halved after two epochs
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct FitConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// Seed of the per-epoch shuffles (and of the validation split).
    pub seed: u64,
    /// Fraction of the training data held out for validation when no validation set is
    /// given.
    pub validation_split: Option<f64>,
    /// Early stopping, if any.
    pub early_stopping: Option<EarlyStopping>,
    /// Best-model checkpointing, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Learning rate per epoch, from the optimiser's rate at the start of `fit`.
    pub schedule: Option<Box<dyn LrSchedule + Send + Sync>>,
    /// How progress is shown.
    pub progress: Progress,
    /// Batches whose gradients are accumulated into one optimiser step (1: a step per
    /// batch); see [`Model::accumulate_gradients`].
    pub accumulate: usize,
    /// Metrics beyond loss and accuracy, computed each epoch for class labels.
    pub metrics: Vec<Metric>,
    /// Backups to resume from after an interruption, if any.
    pub backup: Option<Backup>,
    /// The ranks training together, if any (data-parallel training; see
    /// [`crate::distributed`]).
    pub communicator: Option<Arc<dyn Communicator>>,
}

impl FitConfig {
    /// `epochs` passes in batches of `batch_size`, nothing else.
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
    /// let config = FitConfig::new(10, 32);
    /// assert_eq!((config.epochs, config.batch_size, config.accumulate), (10, 32, 1));
    /// assert!(config.validation_split.is_none() && config.early_stopping.is_none());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn new(epochs: usize, batch_size: usize) -> Self {
        Self {
            epochs,
            batch_size,
            seed: 0,
            validation_split: None,
            early_stopping: None,
            checkpoint: None,
            schedule: None,
            progress: Progress::Auto,
            accumulate: 1,
            metrics: Vec::new(),
            backup: None,
            communicator: None,
        }
    }

    /// Trains data-parallel with the ranks of `communicator` (every rank calls `fit`
    /// with the same model, data and settings; `batch_size` is per rank): see
    /// [`crate::distributed`]. A communicator of one rank trains as without one.
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
    /// use kiln::distributed::SingleProcess;
    /// let mut alone = net.clone();
    /// net.fit(&data, None, &loss, &mut Sgd::new(0.1), &quiet.communicator(SingleProcess))?;
    /// let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
    /// alone.fit(&data, None, &loss, &mut Sgd::new(0.1), &quiet)?;
    /// assert_eq!(net.params().as_slice(), alone.params().as_slice());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn communicator(mut self, communicator: impl Communicator + 'static) -> Self {
        self.communicator = Some(Arc::new(communicator));
        self
    }

    /// Backs up the whole state of training to `path` at the end of every epoch, and
    /// resumes from it: if `path` exists when `fit` starts, training carries on from
    /// the backup, and ends with the parameters an uninterrupted run would have, bit
    /// for bit. The file is removed when `fit` returns `Ok`, kept when it fails. See
    /// [`resume`] for what a backup holds and what must stay the same.
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
    /// let path = std::env::temp_dir().join("kiln-doc-fit.backup");
    /// net.fit(&data, None, &loss, &mut Adam::new(1e-2), &quiet.backup(&path))?;
    /// assert!(!path.exists()); // removed once fit returns Ok
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn backup(mut self, path: impl Into<PathBuf>) -> Self {
        self.backup = Some(Backup {
            path: path.into(),
            every_steps: None,
        });
        self
    }

    /// [`backup`](Self::backup), and also after every `steps` optimiser steps, so that
    /// an interruption loses at most `steps` steps.
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
    /// let path = std::env::temp_dir().join("kiln-doc-fit-steps.backup");
    /// let config = quiet.backup_every(&path, 2);
    /// assert_eq!(config.backup.as_ref().and_then(|b| b.every_steps), Some(2));
    /// net.fit(&data, None, &loss, &mut Adam::new(1e-2), &config)?;
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn backup_every(mut self, path: impl Into<PathBuf>, steps: usize) -> Self {
        self.backup = Some(Backup {
            path: path.into(),
            every_steps: Some(steps),
        });
        self
    }

    /// Computes `metrics` (top-k accuracy, macro F1) each epoch, on the training
    /// batches as they are trained and on the validation data, into the
    /// [`EpochLog`]; they need class labels.
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
    /// use kiln::metrics::Metric;
    /// let config = quiet.metrics(&[Metric::TopK(2), Metric::F1Macro]);
    /// let history = net.fit(&data, None, &loss, &mut Adam::new(1e-2), &config)?;
    /// assert!(history.epochs[0].top_k.is_some() && history.epochs[0].f1_macro.is_some());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn metrics(mut self, metrics: &[Metric]) -> Self {
        self.metrics = metrics.to_vec();
        self
    }

    /// Accumulates the gradients of `batches` batches before each optimiser step, so
    /// that a step sees `batches × batch_size` samples in the memory of one batch
    /// (the epoch's last step takes what is left). The learning rate and schedules
    /// then count steps of the larger batch.
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
    /// // 60 samples in batches of 16: four batches, two steps of 32 an epoch.
    /// net.fit(&data, None, &loss, &mut Sgd::new(0.1), &quiet.accumulate(2))?;
    /// assert_eq!(net.steps(), 3 * 2);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn accumulate(mut self, batches: usize) -> Self {
        self.accumulate = batches;
        self
    }

    /// Sets the shuffling seed.
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
    /// let mut twin = net.clone();
    /// net.fit(&data, None, &loss, &mut Sgd::new(0.1), &quiet.seed(7))?;
    /// let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
    /// twin.fit(&data, None, &loss, &mut Sgd::new(0.1), &quiet.seed(7))?;
    /// assert_eq!(net.params().as_slice(), twin.params().as_slice()); // the same shuffles
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Holds out `fraction` of the training data for validation.
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
    /// let history = net.fit(&data, None, &loss, &mut Adam::new(1e-2), &quiet.validation_split(0.25))?;
    /// assert!(history.epochs.iter().all(|e| e.val_loss.is_some()));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn validation_split(mut self, fraction: f64) -> Self {
        self.validation_split = Some(fraction);
        self
    }

    /// Adds early stopping.
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
    /// let config = quiet.early_stopping(EarlyStopping::new(Monitor::Loss, 5));
    /// assert_eq!(config.early_stopping.map(|e| e.patience), Some(5));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn early_stopping(mut self, early_stopping: EarlyStopping) -> Self {
        self.early_stopping = Some(early_stopping);
        self
    }

    /// Saves the best model to `path`, judged by `monitor`.
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
    /// let path = std::env::temp_dir().join("kiln-doc-best.safetensors");
    /// net.fit(&data, None, &loss, &mut Adam::new(1e-2), &quiet.checkpoint(&path, Monitor::Loss))?;
    /// assert!(path.exists());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn checkpoint(mut self, path: impl Into<PathBuf>, monitor: Monitor) -> Self {
        self.checkpoint = Some(Checkpoint {
            path: path.into(),
            monitor,
        });
        self
    }

    /// Drives the learning rate with `schedule`.
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
    /// let config = quiet.schedule(CosineAnnealing { t_max: 2, eta_min: 0.0 });
    /// let history = net.fit(&data, None, &loss, &mut Sgd::new(0.1), &config)?;
    /// let rates: Vec<f64> = history.epochs.iter().map(|e| e.learning_rate).collect();
    /// assert!((rates[1] - 0.05).abs() < 1e-12 && rates[2] == 0.0);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn schedule(mut self, schedule: impl LrSchedule + Send + Sync + 'static) -> Self {
        self.schedule = Some(Box::new(schedule));
        self
    }

    /// Sets how progress is shown.
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
    /// let config = FitConfig::new(3, 16).progress(Progress::Silent);
    /// assert_eq!(config.progress, Progress::Silent);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }
}

/// The metrics of one epoch.
///
/// ```
/// # use kiln::prelude::*;
/// kiln::model! {
///     struct TwoHeads {
///         inputs: { a: [4], b: [3] },
///         joined: Concat(a, b) >> { Dense(16), Relu },
///         outputs: { first: joined >> Dense(4), second: joined >> Dense(3) },
///     }
/// }
/// let a: Vec<f32> = (0..4 * 40).map(|i| ((i * 7) % 11) as f32 / 11.0).collect();
/// let b: Vec<f32> = (0..3 * 40).map(|i| ((i * 5) % 13) as f32 / 13.0).collect();
/// let (first, second): (Vec<usize>, Vec<usize>) = (0..40).map(|i| (i % 4, i % 3)).unzip();
/// let data = TwoHeads::<f32>::dataset(TwoHeadsInputs { a: &a, b: &b }, TwoHeadsOutputs { first: &first, second: &second })?;
/// let loss = TwoHeadsOutputs { first: CrossEntropy::default(), second: CrossEntropy::default().weight(0.5) };
/// let mut model = TwoHeads::<f32>::new(0);
/// let config = FitConfig::new(2, 8).progress(Progress::Silent).validation_split(0.25);
/// let history = model.fit(&data, None, &loss, &mut Adam::new(1e-2), &config)?;
/// let epoch = &history.epochs[1];
/// assert_eq!(epoch.epoch, 1);
/// assert!(epoch.val_loss.is_some() && epoch.seconds > 0.0);
/// assert_eq!(epoch.accuracy, None); // several outputs: each has its own (`outputs`)
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EpochLog {
    /// 0-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (weighted by batch size), with the
    /// parameters as they were at each step.
    pub loss: f64,
    /// Training accuracy over the epoch, for class labels.
    pub accuracy: Option<f64>,
    /// Validation loss after the epoch.
    pub val_loss: Option<f64>,
    /// Validation accuracy after the epoch, for class labels.
    pub val_accuracy: Option<f64>,
    /// The learning rate used in the epoch.
    pub learning_rate: f64,
    /// With gradient clipping in force ([`Model::set_grad_clip`]): the mean over the
    /// epoch's steps of the gradients' global L2 norm before clipping.
    pub grad_norm: Option<f64>,
    /// Top-k accuracy on the training batches, if [`FitConfig::metrics`] asks for it.
    pub top_k: Option<f64>,
    /// Top-k accuracy on the validation data, if asked for.
    pub val_top_k: Option<f64>,
    /// Macro F1 on the training batches, if asked for.
    pub f1_macro: Option<f64>,
    /// Macro F1 on the validation data, if asked for.
    pub val_f1_macro: Option<f64>,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
    /// For a model with several outputs, trained on their losses together: each
    /// output's own figures, in the model's order (empty otherwise).
    pub outputs: Vec<OutputLog>,
}

impl EpochLog {
    /// The figures of the output called `name`, if the model has one.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// kiln::model! {
    ///     struct TwoHeads {
    ///         inputs: { a: [4], b: [3] },
    ///         joined: Concat(a, b) >> { Dense(16), Relu },
    ///         outputs: { first: joined >> Dense(4), second: joined >> Dense(3) },
    ///     }
    /// }
    /// let a: Vec<f32> = (0..4 * 40).map(|i| ((i * 7) % 11) as f32 / 11.0).collect();
    /// let b: Vec<f32> = (0..3 * 40).map(|i| ((i * 5) % 13) as f32 / 13.0).collect();
    /// let (first, second): (Vec<usize>, Vec<usize>) = (0..40).map(|i| (i % 4, i % 3)).unzip();
    /// let data = TwoHeads::<f32>::dataset(TwoHeadsInputs { a: &a, b: &b }, TwoHeadsOutputs { first: &first, second: &second })?;
    /// let loss = TwoHeadsOutputs { first: CrossEntropy::default(), second: CrossEntropy::default().weight(0.5) };
    /// let mut model = TwoHeads::<f32>::new(0);
    /// let config = FitConfig::new(1, 8).progress(Progress::Silent);
    /// let history = model.fit(&data, None, &loss, &mut Adam::new(1e-2), &config)?;
    /// assert!(history.epochs[0].output("second").unwrap().accuracy.is_some());
    /// assert!(history.epochs[0].output("third").is_none());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn output(&self, name: &str) -> Option<&OutputLog> {
        self.outputs.iter().find(|o| o.name == name)
    }
}

/// One output's figures in an epoch of a model with several, as Keras reports
/// `digit_loss` and `val_digit_accuracy`.
///
/// ```
/// # use kiln::prelude::*;
/// kiln::model! {
///     struct TwoHeads {
///         inputs: { a: [4], b: [3] },
///         joined: Concat(a, b) >> { Dense(16), Relu },
///         outputs: { first: joined >> Dense(4), second: joined >> Dense(3) },
///     }
/// }
/// let a: Vec<f32> = (0..4 * 40).map(|i| ((i * 7) % 11) as f32 / 11.0).collect();
/// let b: Vec<f32> = (0..3 * 40).map(|i| ((i * 5) % 13) as f32 / 13.0).collect();
/// let (first, second): (Vec<usize>, Vec<usize>) = (0..40).map(|i| (i % 4, i % 3)).unzip();
/// let data = TwoHeads::<f32>::dataset(TwoHeadsInputs { a: &a, b: &b }, TwoHeadsOutputs { first: &first, second: &second })?;
/// let loss = TwoHeadsOutputs { first: CrossEntropy::default(), second: CrossEntropy::default().weight(0.5) };
/// let mut model = TwoHeads::<f32>::new(0);
/// let config = FitConfig::new(1, 8).progress(Progress::Silent);
/// let history = model.fit(&data, None, &loss, &mut Adam::new(1e-2), &config)?;
/// let names: Vec<&str> = history.epochs[0].outputs.iter().map(|o| o.name).collect();
/// assert_eq!(names, ["first", "second"]);
/// let total: f64 = history.epochs[0].outputs.iter().map(|o| o.loss).sum();
/// assert!((total - history.epochs[0].loss).abs() < 1e-5); // the weighted parts add up
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputLog {
    /// The output's name.
    pub name: &'static str,
    /// Its mean training loss over the epoch's batches (its weight included).
    pub loss: f64,
    /// Its training accuracy, for class labels.
    pub accuracy: Option<f64>,
    /// Its validation loss after the epoch.
    pub val_loss: Option<f64>,
    /// Its validation accuracy after the epoch, for class labels.
    pub val_accuracy: Option<f64>,
}

/// What [`fit`] did, epoch by epoch.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// let history = net.fit(&data, None, &CrossEntropy::default(), &mut Adam::new(1e-2), &quiet.validation_split(0.2))?;
/// let last = history.epochs.last().unwrap();
/// assert!(last.val_loss.is_some() && last.accuracy.is_some());
/// assert!(!history.stopped_early);
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// One entry per epoch run.
    pub epochs: Vec<EpochLog>,
    /// Whether early stopping ended training.
    pub stopped_early: bool,
    /// The best epoch by the early-stopping (or checkpoint) monitor, if any.
    pub best_epoch: Option<usize>,
}

/// Loss and accuracy over a dataset.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// let scores = net.evaluate(&data, &CrossEntropy::default(), 16)?;
/// assert_eq!(scores.samples, 60);
/// assert!((0.0..=1.0).contains(&scores.accuracy.unwrap()));
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean loss (sample-weighted mean of the batch losses).
    pub loss: f64,
    /// Accuracy, for class labels.
    pub accuracy: Option<f64>,
    /// Samples evaluated.
    pub samples: usize,
    /// Top-k accuracy, if [`evaluate_metrics`] was asked for it.
    pub top_k: Option<f64>,
    /// Macro F1, if [`evaluate_metrics`] was asked for it.
    pub f1_macro: Option<f64>,
}

fn layout<T: Float, M: Model<T>>(batch: usize) -> OutputLayout {
    OutputLayout {
        batch,
        width: M::SPEC.output.last().copied().unwrap_or(1),
    }
}

/// Loss and accuracy of `model` on `data`, in batches of `batch_size`, dropout off.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// let scores = kiln::train::evaluate(&mut net, &data, &CrossEntropy::default(), 32)?;
/// assert_eq!(scores.samples, 60);
/// assert!(scores.accuracy.is_some() && scores.loss > 0.0);
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn evaluate<T, M, L, Y>(
    model: &mut M,
    data: &Dataset<T, M::Input, Y>,
    loss: &L,
    batch_size: usize,
) -> Result<Evaluation>
where
    T: Float,
    M: Model<T>,
    L: Loss<T, Target = [Y]>,
    Y: Target,
{
    evaluate_counting(model, data, loss, batch_size, None, None, &mut [])
}

/// [`evaluate`] with `metrics` (top-k accuracy, macro F1) in the result; they need
/// class labels.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// use kiln::metrics::Metric;
/// use kiln::train::evaluate_metrics;
/// let scores = evaluate_metrics(&mut net, &data, &CrossEntropy::default(), 32, &[Metric::TopK(2), Metric::F1Macro])?;
/// assert!(scores.top_k.unwrap() >= scores.accuracy.unwrap());
/// assert!(scores.f1_macro.is_some());
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn evaluate_metrics<T, M, L, Y>(
    model: &mut M,
    data: &Dataset<T, M::Input, Y>,
    loss: &L,
    batch_size: usize,
    metrics: &[Metric],
) -> Result<Evaluation>
where
    T: Float,
    M: Model<T>,
    L: Loss<T, Target = [Y]>,
    Y: Target,
{
    let mut counts = metric_counts::<T, M, Y>(metrics, data.targets(), loss.outputs())?;
    evaluate_counting(
        model,
        data,
        loss,
        batch_size,
        counts.as_mut(),
        None,
        &mut [],
    )
}

/// Counts for `metrics`, `None` if there are none; an error for targets that are not
/// class labels.
fn metric_counts<T: Float, M: Model<T>, Y: Target>(
    metrics: &[Metric],
    targets: &[Y],
    outputs: usize,
) -> Result<Option<MetricCounts>> {
    if metrics.is_empty() {
        return Ok(None);
    }
    if outputs > 1 {
        return Err(Error::Mismatch(
            "top-k accuracy and F1 score one output: a model with several reports each \
             output's loss and accuracy with `evaluate_outputs`"
                .into(),
        ));
    }
    if Y::labels(targets).is_none() {
        return Err(Error::Mismatch(
            "top-k accuracy and F1 need class labels as targets".into(),
        ));
    }
    MetricCounts::new(metrics, layout::<T, M>(1).width).map(Some)
}

/// Each output's loss (its weight included) and, for class labels, accuracy on `data`,
/// in batches of `batch_size` with dropout off, for the loss of a model with several
/// outputs ([`Loss::output_names`], in that order); [`evaluate`] gives their total.
///
/// # Errors
/// As [`evaluate`].
///
/// ```
/// # use kiln::prelude::*;
/// kiln::model! {
///     struct TwoHeads {
///         inputs: { a: [4], b: [3] },
///         joined: Concat(a, b) >> { Dense(16), Relu },
///         outputs: { first: joined >> Dense(4), second: joined >> Dense(3) },
///     }
/// }
/// let a: Vec<f32> = (0..4 * 40).map(|i| ((i * 7) % 11) as f32 / 11.0).collect();
/// let b: Vec<f32> = (0..3 * 40).map(|i| ((i * 5) % 13) as f32 / 13.0).collect();
/// let (first, second): (Vec<usize>, Vec<usize>) = (0..40).map(|i| (i % 4, i % 3)).unzip();
/// let data = TwoHeads::<f32>::dataset(TwoHeadsInputs { a: &a, b: &b }, TwoHeadsOutputs { first: &first, second: &second })?;
/// let loss = TwoHeadsOutputs { first: CrossEntropy::default(), second: CrossEntropy::default().weight(0.5) };
/// let mut model = TwoHeads::<f32>::new(0);
/// let scores = kiln::train::evaluate_outputs(&mut model, &data, &loss, 16)?;
/// let total = model.evaluate(&data, &loss, 16)?.loss;
/// assert!((scores[0].loss + scores[1].loss - total).abs() < 1e-5);
/// assert!(scores.iter().all(|s| s.accuracy.is_some() && s.samples == 40));
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn evaluate_outputs<T, M, L, Y>(
    model: &mut M,
    data: &Dataset<T, M::Input, Y>,
    loss: &L,
    batch_size: usize,
) -> Result<Vec<Evaluation>>
where
    T: Float,
    M: Model<T>,
    L: Loss<T, Target = [Y]>,
    Y: Target,
{
    let mut scores = vec![OutputScore::default(); loss.output_names().len()];
    let total = evaluate_counting(model, data, loss, batch_size, None, None, &mut scores)?;
    Ok(scores
        .iter()
        .map(|score| output_evaluation(score, total.samples))
        .collect())
}

/// One output's mean loss and accuracy over `samples` from its sums.
fn output_evaluation(score: &OutputScore, samples: usize) -> Evaluation {
    Evaluation {
        loss: score.loss / samples.max(1) as f64,
        accuracy: (score.counted > 0.0).then(|| score.correct / score.counted),
        samples,
        top_k: None,
        f1_macro: None,
    }
}

/// Scores `data`. With several ranks, each takes its contiguous part and the sums and
/// metric counts are summed across ranks: each sample is scored once.
fn evaluate_counting<T, M, L, Y>(
    model: &mut M,
    data: &Dataset<T, M::Input, Y>,
    loss: &L,
    batch_size: usize,
    mut counts: Option<&mut MetricCounts>,
    comm: Option<&dyn Communicator>,
    outputs: &mut [OutputScore],
) -> Result<Evaluation>
where
    T: Float,
    M: Model<T>,
    L: Loss<T, Target = [Y]>,
    Y: Target,
{
    let range = comm.map(|c| {
        let (rank, size, n) = (c.rank(), c.size(), data.len());
        rank * n / size..(rank + 1) * n / size
    });
    outputs.fill(OutputScore::default());
    let part = counts.as_deref_mut();
    let mut sums = evaluation_sums(model, data, loss, batch_size, part, range, outputs)?;
    if let Some(comm) = comm {
        sum_in_place(comm, &mut sums.0)?;
        sum_scores(comm, outputs)?;
        if let Some(counts) = counts.as_deref_mut() {
            sum_counts(comm, counts)?;
        }
    }
    Ok(sums.evaluation(counts.as_deref()))
}

/// The sums an evaluation is made of: loss × samples, correct, counted, samples.
#[derive(Debug, Clone, Copy)]
struct EvaluationSums([f64; 4]);

impl EvaluationSums {
    fn evaluation(self, counts: Option<&MetricCounts>) -> Evaluation {
        let [total, correct, counted, samples] = self.0;
        Evaluation {
            loss: total / samples,
            accuracy: (counted > 0.0).then(|| correct / counted),
            samples: samples as usize,
            top_k: counts.and_then(MetricCounts::top_k),
            f1_macro: counts.and_then(MetricCounts::f1_macro),
        }
    }
}

/// Scores `data` (or only the samples in `range`), in order.
fn evaluation_sums<T, M, L, Y>(
    model: &mut M,
    data: &Dataset<T, M::Input, Y>,
    loss: &L,
    batch_size: usize,
    mut counts: Option<&mut MetricCounts>,
    range: Option<std::ops::Range<usize>>,
    outputs: &mut [OutputScore],
) -> Result<EvaluationSums>
where
    T: Float,
    M: Model<T>,
    L: Loss<T, Target = [Y]>,
    Y: Target,
{
    check_batch_size(batch_size)?;
    M::SPEC.check_input(data.features().as_slice())?;
    let mut batches = data.batches(batch_size, None);
    if let Some(range) = range {
        batches.restrict(range);
    }
    let (mut total, mut correct, mut counted, mut samples) = (0.0, 0, 0, 0);
    let width = layout::<T, M>(1).width;
    // Accuracy reads one output's rows; a loss of several outputs has none overall.
    let single = loss.outputs() == 1;
    if let Some(counts) = counts.as_deref_mut() {
        counts.reset();
    }
    while let Some((x, y)) = batches.next_batch() {
        let batch = x.batch();
        let output = model.infer(x);
        let layout = layout::<T, M>(batch);
        total += loss
            .evaluate_scored(output, y, layout, None, 1.0, outputs)?
            .to_f64()
            * batch as f64;
        let right = Y::correct(output, y, width).or_else(|| loss.correct(output, y, layout));
        if let Some((c, n)) = right.filter(|_| single) {
            correct += c;
            counted += n;
        }
        if let (Some(counts), Some(labels)) = (counts.as_deref_mut(), Y::labels(y)) {
            counts.add(output, labels, width);
        }
        samples += batch;
    }
    Ok(EvaluationSums([
        total,
        correct as f64,
        counted as f64,
        samples as f64,
    ]))
}

/// Sums metric counts across ranks.
fn sum_counts(comm: &dyn Communicator, counts: &mut MetricCounts) -> Result<()> {
    let mut values: Vec<f64> = counts.to_counts().iter().map(|&c| c as f64).collect();
    sum_in_place(comm, &mut values)?;
    let summed: Vec<u64> = values.iter().map(|&c| c as u64).collect();
    if counts.restore_counts(&summed) {
        Ok(())
    } else {
        Err(Error::Distributed(
            "the ranks' metric counts have different layouts".into(),
        ))
    }
}

/// A batch size of 0 is an error, not a batch of 1.
fn check_batch_size(batch_size: usize) -> Result<()> {
    if batch_size == 0 {
        return Err(Error::InvalidHyperParameter {
            name: "batch_size",
            value: 0.0,
            reason: "must be at least 1",
        });
    }
    Ok(())
}

/// Outputs of `model` for every sample of `x`, computed in batches of `batch_size`.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// let outputs = kiln::train::predict(&mut net, data.features(), 7);
/// assert_eq!(outputs.batch(), 60); // nine batches of 7 and one of 4, joined
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn predict<'a, T: Float, M: Model<T>>(
    model: &mut M,
    x: impl Into<TensorRef<'a, T, M::Input>>,
    batch_size: usize,
) -> Tensor<T, M::Output> {
    let x = x.into();
    let mut out = Vec::with_capacity(x.batch() * <M::Output as Shape>::SIZE);
    let mut start = 0;
    while start < x.batch() {
        let end = start.saturating_add(batch_size.max(1)).min(x.batch());
        out.extend_from_slice(model.infer(x.slice(start, end)));
        start = end;
    }
    Tensor::from_vec(out).expect("a non-empty input gives a non-empty output")
}

/// The class (row-wise argmax) `model` predicts for each sample of `x`.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// let classes = kiln::train::predict_classes(&mut net, data.features(), 32);
/// assert_eq!(classes.len(), 60);
/// assert!(classes.iter().all(|&c| c < 3));
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn predict_classes<'a, T: Float, M: Model<T>>(
    model: &mut M,
    x: impl Into<TensorRef<'a, T, M::Input>>,
    batch_size: usize,
) -> Vec<usize> {
    predict(model, x, batch_size).argmax()
}

/// Trains `model` on `train` for `config.epochs` epochs; see the module docs.
///
/// `validation` is scored after each epoch; without it, `config.validation_split`
/// holds out part of `train`. The checkpoint's directory is created if missing. Errors
/// — a non-finite loss, a checkpoint that cannot be written, a monitor that needs validation data when there is none — stop training
/// and are returned; the model keeps the parameters of its last successful step.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// let before = kiln::train::evaluate(&mut net, &data, &CrossEntropy::default(), 60)?.loss;
/// let history = kiln::train::fit(&mut net, &data, None, &CrossEntropy::default(), &mut Adam::new(1e-2), &quiet)?;
/// assert_eq!(history.epochs.len(), 3);
/// assert!(history.epochs[2].loss < before);
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn fit<T, M, L, O, Y>(
    model: &mut M,
    train: &Dataset<T, M::Input, Y>,
    validation: Option<&Dataset<T, M::Input, Y>>,
    loss: &L,
    optimizer: &mut O,
    config: &FitConfig,
) -> Result<History>
where
    T: Float,
    M: Model<T> + Send,
    L: Loss<T, Target = [Y]> + Sync,
    O: Optimizer<T> + Send,
    Y: Target,
{
    fit_with_callbacks(model, train, validation, loss, optimizer, config, &mut [])
}

/// [`fit`], running `callbacks` after the built-ins at each point of training (see
/// [`Callback`]): `fit_with_callbacks(.., &mut [&mut ReduceLrOnPlateau::new(Monitor::ValLoss),
/// &mut CsvLogger::new("log.csv")])`.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// let log = std::env::temp_dir().join("kiln-doc-fit-log.csv");
/// let mut plateau = ReduceLrOnPlateau::new(Monitor::Loss).patience(0).factor(0.5);
/// let mut logger = CsvLogger::new(&log);
/// kiln::train::fit_with_callbacks(&mut net, &data, None, &CrossEntropy::default(), &mut Adam::new(1e-2), &quiet,
///     &mut [&mut plateau, &mut logger])?;
/// assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 4); // header + 3 epochs
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn fit_with_callbacks<T, M, L, O, Y>(
    model: &mut M,
    train: &Dataset<T, M::Input, Y>,
    validation: Option<&Dataset<T, M::Input, Y>>,
    loss: &L,
    optimizer: &mut O,
    config: &FitConfig,
    callbacks: &mut [&mut (dyn Callback<T, M> + Send)],
) -> Result<History>
where
    T: Float,
    M: Model<T> + Send,
    L: Loss<T, Target = [Y]> + Sync,
    O: Optimizer<T> + Send,
    Y: Target,
{
    // With several ranks, everything below must fail on all of them or on none: they
    // first agree on what decides it.
    let comm = config.communicator.as_deref().filter(|c| c.size() > 1);
    if let Some(comm) = comm {
        let learning_rate = optimizer.learning_rate();
        agree_to_fit::<T, M, Y>(comm, model, learning_rate, train, validation, config)?;
    }
    check_batch_size(config.batch_size)?;
    if let Some(fraction) = config.validation_split {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(Error::InvalidHyperParameter {
                name: "validation_split",
                value: fraction,
                reason: "must be between 0 and 1, both excluded",
            });
        }
        if train.len() < 2 {
            return Err(Error::Mismatch(
                "validation_split needs at least two samples to split".into(),
            ));
        }
    }
    let split;
    let (train, validation) = match (validation, config.validation_split) {
        (Some(v), _) => (train, Some(v)),
        (None, Some(fraction)) => {
            split = train.split(fraction, config.seed);
            (&split.0, Some(&split.1))
        }
        (None, None) => (train, None),
    };
    if config.accumulate == 0 {
        return Err(Error::InvalidHyperParameter {
            name: "accumulate",
            value: 0.0,
            reason: "must be at least 1 batch per step",
        });
    }
    for monitor in [
        config.early_stopping.map(|e| e.monitor),
        config.checkpoint.as_ref().map(|c| c.monitor),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(output) = monitor.output() {
            let names = loss.output_names();
            if !names.contains(&output) {
                return Err(Error::Mismatch(format!(
                    "fit monitors {} but the loss has no output `{output}` (its outputs: {})",
                    monitor.name(),
                    if names.is_empty() {
                        "none named".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        }
        let needs_validation = monitor.needs_validation();
        if needs_validation && validation.is_none() {
            return Err(Error::Mismatch(format!(
                "fit monitors {} but has no validation data: pass a validation set or set validation_split",
                monitor.name()
            )));
        }
    }
    if let Some(backup) = &config.backup {
        if backup.every_steps == Some(0) {
            return Err(Error::InvalidHyperParameter {
                name: "backup steps",
                value: 0.0,
                reason: "must be at least 1 step between backups",
            });
        }
        if let Some(dir) = backup.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, &e))?;
        }
    }
    // The checkpoint's directory is made now, so that a path that cannot be written
    // fails before the first epoch rather than after it.
    if let Some(checkpoint) = &config.checkpoint {
        if let Some(dir) = checkpoint
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, &e))?;
        }
    }
    let Some(comm) = comm else {
        return rayon::scope(|_| {
            run_epochs(
                model, train, validation, loss, optimizer, config, callbacks, None,
            )
        });
    };
    // From here a rank that fails would leave the others waiting: it ends the job.
    let trained = model
        .state_mut(SEALED)
        .broadcast_from_root(comm)
        .and_then(|()| {
            rayon::scope(|_| {
                run_epochs(
                    model,
                    train,
                    validation,
                    loss,
                    optimizer,
                    config,
                    callbacks,
                    Some(comm),
                )
            })
        });
    match trained {
        Err(e) => comm.abort(&e.to_string()),
        history => history,
    }
}

/// Checks that every rank is about to run the same training (see
/// [`crate::distributed`]).
fn agree_to_fit<T, M, Y>(
    comm: &dyn Communicator,
    model: &M,
    learning_rate: f64,
    train: &Dataset<T, M::Input, Y>,
    validation: Option<&Dataset<T, M::Input, Y>>,
    config: &FitConfig,
) -> Result<()>
where
    T: Float,
    M: Model<T>,
    Y: Target,
{
    let spec = M::SPEC;
    let table = hash_words(spec.params.iter().flat_map(|p| {
        let name = p.full_name();
        let bytes: Vec<u64> = name.bytes().map(u64::from).collect();
        bytes
            .into_iter()
            .chain([p.offset as u64, p.range().len() as u64])
    }));
    let data = |d: Option<&Dataset<T, M::Input, Y>>| {
        d.map_or((0, 0, 0), |d| {
            (
                d.len() as u64,
                crate::distributed::hash_values(d.features().as_slice()),
                Y::fingerprint(d.targets()),
            )
        })
    };
    let (train_len, train_features, train_targets) = data(Some(train));
    let (val_len, val_features, val_targets) = data(validation);
    agree(
        comm,
        &[
            ("the parameter table", table),
            (
                "the model's regulariser, clipping, frozen tensors, rate scales or guard",
                model.state(SEALED).settings_hash(),
            ),
            ("the optimiser's learning rate", learning_rate.to_bits()),
            ("the buffer count", spec.buffer_count as u64),
            (
                "the element type",
                hash_words(T::DTYPE.bytes().map(u64::from)),
            ),
            ("the number of training samples", train_len),
            ("the training features", train_features),
            ("the training targets", train_targets),
            ("the number of validation samples", val_len),
            ("the validation features", val_features),
            ("the validation targets", val_targets),
            ("batch_size", config.batch_size as u64),
            ("epochs", config.epochs as u64),
            ("seed", config.seed),
            ("accumulate", config.accumulate as u64),
            (
                "validation_split",
                config.validation_split.map_or(u64::MAX, f64::to_bits),
            ),
            ("early stopping", u64::from(config.early_stopping.is_some())),
            ("the metrics", config.metrics.len() as u64),
            ("backup", u64::from(config.backup.is_some())),
        ],
    )
}

fn run_epochs<T, M, L, O, Y>(
    model: &mut M,
    train: &Dataset<T, M::Input, Y>,
    validation: Option<&Dataset<T, M::Input, Y>>,
    loss: &L,
    optimizer: &mut O,
    config: &FitConfig,
    user: &mut [&mut (dyn Callback<T, M> + Send)],
    comm: Option<&dyn Communicator>,
) -> Result<History>
where
    T: Float,
    M: Model<T>,
    L: Loss<T, Target = [Y]>,
    O: Optimizer<T>,
    Y: Target,
{
    let width = layout::<T, M>(1).width;
    let mut history = History::default();
    let mut batches = train.batches(config.batch_size, Some(config.seed));
    let root = comm.is_none_or(|c| c.rank() == 0);
    if let Some(comm) = comm {
        batches = batches.sharded(comm.rank(), comm.size());
    }
    let count = batches.len();
    let mut train_counts =
        metric_counts::<T, M, Y>(&config.metrics, train.targets(), loss.outputs())?;
    let mut val_counts = train_counts.clone();
    // Each output's figures, for a loss of several.
    let names = loss.output_names();
    let mut train_outputs = vec![OutputScore::default(); names.len()];
    let mut val_outputs = train_outputs.clone();
    // The built-ins, then the caller's callbacks, in the order they run.
    let mut schedule = config
        .schedule
        .as_deref()
        .map(|schedule| callback::Schedule {
            schedule,
            base: 0.0,
        });
    let shown = if root {
        config.progress
    } else {
        Progress::Silent
    };
    let mut progress = callback::ProgressCallback(shown.start(config.epochs, batches.len()));
    let mut checkpoint = config
        .checkpoint
        .as_ref()
        .map(|c| callback::CheckpointCallback {
            path: &c.path,
            monitor: c.monitor,
            records_best: config.early_stopping.is_none(),
            best: None,
            write: root,
        });
    let mut stopping = config
        .early_stopping
        .map(|stopping| callback::EarlyStoppingCallback::<T> {
            stopping,
            best: None,
            waited: 0,
            saved: None,
        });
    let mut callbacks: Vec<&mut dyn Callback<T, M>> = Vec::new();
    if let Some(schedule) = &mut schedule {
        callbacks.push(schedule);
    }
    callbacks.push(&mut progress);
    if let Some(checkpoint) = &mut checkpoint {
        callbacks.push(checkpoint);
    }
    if let Some(stopping) = &mut stopping {
        callbacks.push(stopping);
    }
    for callback in user.iter_mut() {
        callbacks.push(&mut **callback);
    }
    let mut fit = FitState {
        model,
        history: &mut history,
        learning_rate: optimizer.learning_rate(),
        stop: false,
        epochs: config.epochs,
        element: std::marker::PhantomData,
    };
    // A callback may have changed the rate: the optimiser takes it before the next step.
    fn sync<T: Float, O: Optimizer<T>>(optimizer: &mut O, rate: f64) {
        if optimizer.learning_rate() != rate {
            optimizer.set_learning_rate(rate);
        }
    }
    for callback in callbacks.iter_mut() {
        callback.on_train_begin(&mut fit)?;
    }
    let fingerprint = Fingerprint {
        batch_size: config.batch_size as u64,
        seed: config.seed,
        accumulate: config.accumulate as u64,
        train: train.len() as u64,
        validation: validation.map_or(0, |v| v.len() as u64),
        callbacks: callbacks.len() as u64,
    };
    let mut at = Position::default();
    // With several ranks, rank 0's backup, if it has one, is every rank's.
    let shared = match (comm, &config.backup) {
        (Some(comm), Some(backup)) => backup_from_root(comm, &backup.path)?,
        _ => None,
    };
    if let Some(backup) = config.backup.as_ref() {
        if shared.is_some() || (comm.is_none() && backup.path.exists()) {
            at = restore(
                backup,
                &fingerprint,
                &mut fit,
                optimizer,
                &mut callbacks,
                train_counts.as_mut(),
                shared.as_deref(),
                (names, &mut train_outputs),
            )?;
            // The backup holds every rank's sums so far: rank 0 carries them.
            if !root {
                train_outputs.fill(OutputScore::default());
                at.sums = Sums {
                    batch: at.sums.batch,
                    norms: at.sums.norms,
                    steps: at.sums.steps,
                    ..Sums::default()
                };
                if let Some(counts) = &mut train_counts {
                    counts.reset();
                }
            }
        }
    }
    sync(optimizer, fit.learning_rate);
    for epoch in at.epoch..config.epochs {
        let started = Instant::now();
        for callback in callbacks.iter_mut() {
            callback.on_epoch_begin(epoch, &mut fit)?;
        }
        sync(optimizer, fit.learning_rate);
        batches.start_epoch(epoch);
        // A resumed epoch starts at the backed-up batch with the sums it had there.
        let mut sums = if epoch == at.epoch {
            at.sums
        } else {
            if let Some(counts) = &mut train_counts {
                counts.reset();
            }
            train_outputs.fill(OutputScore::default());
            Sums::default()
        };
        batches.skip_batches(sums.batch);
        let mut in_step = 0;
        while let Some((x, y, part)) = batches.next_batch_part() {
            let index = sums.batch;
            for callback in callbacks.iter_mut() {
                callback.on_batch_begin(epoch, index, count, &mut fit)?;
            }
            sync(optimizer, fit.learning_rate);
            let batch = part.rows;
            // The step's own evaluation of the loss scores each output (a part with no
            // rows of its own, which runs a stand-in sample, is scored nowhere).
            let scoring = Scoring {
                loss,
                scores: std::sync::Mutex::new(if batch > 0 {
                    std::mem::take(&mut train_outputs)
                } else {
                    Vec::new()
                }),
            };
            let value = if let Some(comm) = comm {
                let model = &mut *fit.model;
                if config.accumulate == 1 {
                    crate::model::data_parallel_step(model, x, y, &scoring, optimizer, part, comm)?
                } else {
                    let value =
                        crate::model::data_parallel_accumulate(model, x, y, &scoring, part)?;
                    in_step += 1;
                    if in_step == config.accumulate || index + 1 == count {
                        crate::model::data_parallel_apply(model, optimizer, comm)?;
                        in_step = 0;
                    }
                    value
                }
            } else if config.accumulate == 1 {
                fit.model.train_step(x, y, &scoring, optimizer)?
            } else {
                let value = fit.model.accumulate_gradients(x, y, &scoring)?;
                in_step += 1;
                if in_step == config.accumulate || index + 1 == count {
                    fit.model.apply_accumulated(optimizer)?;
                    in_step = 0;
                }
                value
            };
            if batch > 0 {
                train_outputs = scoring.into_scores();
            }
            if fit.model.grad_clip().is_some() && in_step == 0 {
                sums.norms += fit.model.grad_norm().unwrap_or(f64::NAN);
                sums.steps += 1;
            }
            sums.total += value.to_f64() * batch as f64;
            sums.samples += batch;
            // (A part with no rows of its own ran a stand-in sample, counted nowhere.)
            // Accuracy reads one output's rows; a loss of several outputs has none overall.
            let counted = batch > 0 && loss.outputs() == 1;
            let output = fit.model.last_output();
            let correct = Y::correct(output, y, width)
                .or_else(|| loss.correct(output, y, layout::<T, M>(batch)));
            if let Some((c, n)) = correct.filter(|_| counted) {
                sums.correct += c;
                sums.counted += n;
            }
            if let (Some(counts), Some(labels), true) = (&mut train_counts, Y::labels(y), counted) {
                counts.add(fit.model.last_output(), labels, width);
            }
            let log = BatchLog {
                epoch,
                batch: index,
                batches: count,
                loss: value.to_f64(),
                mean_loss: sums.total / sums.samples as f64,
                accuracy: (sums.counted > 0).then(|| sums.correct as f64 / sums.counted as f64),
            };
            for callback in callbacks.iter_mut() {
                callback.on_batch_end(&log, &mut fit)?;
            }
            sync(optimizer, fit.learning_rate);
            sums.batch += 1;
            if fit.stop {
                break;
            }
            // Between optimiser steps, not at the epoch's end (backed up below).
            if let Some(backup) = &config.backup {
                let due = backup
                    .every_steps
                    .is_some_and(|every| fit.model.steps() % every as u64 == 0);
                if due && in_step == 0 && sums.batch < count {
                    // With several ranks, the backup holds the epoch's sums so far over
                    // all of them (a resumed rank 0 carries them, the others start at 0).
                    let mut at = Position { epoch, sums };
                    let mut counts = train_counts.clone();
                    let mut outputs = train_outputs.clone();
                    if let Some(comm) = comm {
                        sum_epoch(comm, &mut at.sums, counts.as_mut(), &mut outputs)?;
                    }
                    if root {
                        back_up(
                            backup,
                            &fingerprint,
                            &at,
                            &fit,
                            optimizer,
                            &callbacks,
                            counts.as_ref(),
                            &outputs,
                        )?;
                    }
                }
            }
        }
        if in_step > 0 {
            // Stopped inside a group of accumulated batches: step on what it has.
            match comm {
                Some(comm) => crate::model::data_parallel_apply(&mut *fit.model, optimizer, comm)?,
                None => fit.model.apply_accumulated(optimizer)?,
            };
        }
        if let Some(comm) = comm {
            sum_epoch(comm, &mut sums, train_counts.as_mut(), &mut train_outputs)?;
            agree(
                comm,
                &[("the parameters", fit.model.state(SEALED).params_hash())],
            )
            .map_err(|_| {
                Error::Distributed(format!(
                    "the ranks' parameters differ after epoch {epoch}: the communicator's \
                         all-reduce did not give every rank the same sums"
                ))
            })?;
        }
        let bs = config.batch_size;
        let scored = validation
            .map(|v| {
                let counts = val_counts.as_mut();
                evaluate_counting(fit.model, v, loss, bs, counts, comm, &mut val_outputs)
            })
            .transpose()?;
        let outputs = names
            .iter()
            .zip(&train_outputs)
            .zip(&val_outputs)
            .map(|((&name, train), val)| {
                let train = output_evaluation(train, sums.samples);
                let val = scored.map(|s| output_evaluation(val, s.samples));
                OutputLog {
                    name,
                    loss: train.loss,
                    accuracy: train.accuracy,
                    val_loss: val.map(|v| v.loss),
                    val_accuracy: val.and_then(|v| v.accuracy),
                }
            })
            .collect();
        let log = EpochLog {
            epoch,
            loss: sums.total / sums.samples.max(1) as f64,
            accuracy: (sums.counted > 0).then(|| sums.correct as f64 / sums.counted as f64),
            val_loss: scored.map(|s| s.loss),
            val_accuracy: scored.and_then(|s| s.accuracy),
            learning_rate: optimizer.learning_rate(),
            grad_norm: (sums.steps > 0).then(|| sums.norms / sums.steps as f64),
            top_k: train_counts.as_ref().and_then(MetricCounts::top_k),
            val_top_k: scored.and_then(|s| s.top_k),
            f1_macro: train_counts.as_ref().and_then(MetricCounts::f1_macro),
            val_f1_macro: scored.and_then(|s| s.f1_macro),
            seconds: started.elapsed().as_secs_f64(),
            outputs,
        };
        fit.history.epochs.push(log.clone());
        for callback in callbacks.iter_mut() {
            callback.on_epoch_end(&log, &mut fit)?;
        }
        sync(optimizer, fit.learning_rate);
        if fit.stop {
            break;
        }
        if let Some(backup) = config.backup.as_ref().filter(|_| root) {
            let at = Position {
                epoch: epoch + 1,
                sums: Sums::default(),
            };
            let cleared = vec![OutputScore::default(); names.len()];
            back_up(
                backup,
                &fingerprint,
                &at,
                &fit,
                optimizer,
                &callbacks,
                None,
                &cleared,
            )?;
        }
    }
    for callback in callbacks.iter_mut() {
        callback.on_train_end(&mut fit)?;
    }
    drop(callbacks);
    if let Some(backup) = config.backup.as_ref().filter(|_| root) {
        // Done: a later run with this backup would have nothing to resume.
        match std::fs::remove_file(&backup.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(&backup.path, &e))
            }
            _ => {}
        }
    }
    Ok(history)
}

/// Sums the additive parts of an epoch's sums and its metric counts across ranks (the
/// gradient norms are the same on every rank).
fn sum_epoch(
    comm: &dyn Communicator,
    sums: &mut Sums,
    counts: Option<&mut MetricCounts>,
    outputs: &mut [OutputScore],
) -> Result<()> {
    sum_scores(comm, outputs)?;
    let mut totals = [
        sums.total,
        sums.samples as f64,
        sums.correct as f64,
        sums.counted as f64,
    ];
    sum_in_place(comm, &mut totals)?;
    let [total, samples, correct, counted] = totals;
    sums.total = total;
    sums.samples = samples as usize;
    sums.correct = correct as usize;
    sums.counted = counted as usize;
    if let Some(counts) = counts {
        sum_counts(comm, counts)?;
    }
    Ok(())
}

/// `loss` in a training step of `fit`: its evaluation also adds each output's scores
/// to `scores` ([`Loss::evaluate_scored`]), so that the step's own evaluation scores the
/// outputs. (A lock, as a `Loss` evaluates through `&self`; taken once a step.)
struct Scoring<'a, L> {
    loss: &'a L,
    scores: std::sync::Mutex<Vec<OutputScore>>,
}

impl<L> Scoring<'_, L> {
    fn into_scores(self) -> Vec<OutputScore> {
        self.scores.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: Float, L: Loss<T>> Loss<T> for Scoring<'_, L> {
    type Target = L::Target;

    fn evaluate(
        &self,
        output: &[T],
        target: &Self::Target,
        layout: OutputLayout,
        grad_output: Option<&mut [T]>,
    ) -> Result<T> {
        let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        (self.loss).evaluate_scored(output, target, layout, grad_output, 1.0, &mut scores)
    }

    crate::loss::forward_to_inner_loss!();
}

/// Sums each output's scores across ranks.
fn sum_scores(comm: &dyn Communicator, outputs: &mut [OutputScore]) -> Result<()> {
    if outputs.is_empty() {
        return Ok(());
    }
    let mut flat: Vec<f64> = outputs
        .iter()
        .flat_map(|o| [o.loss, o.correct, o.counted])
        .collect();
    sum_in_place(comm, &mut flat)?;
    for (o, v) in outputs.iter_mut().zip(flat.chunks_exact(3)) {
        *o = OutputScore {
            loss: v[0],
            correct: v[1],
            counted: v[2],
        };
    }
    Ok(())
}

/// Rank 0's backup file, sent to every rank (`None` if rank 0 has none).
fn backup_from_root(comm: &dyn Communicator, path: &std::path::Path) -> Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    let mut len = [u8::MAX; 8];
    if comm.rank() == 0 && path.exists() {
        bytes = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
        len = (bytes.len() as u64).to_le_bytes();
    }
    comm.broadcast(&mut len, 0)?;
    let len = u64::from_le_bytes(len);
    if len == u64::MAX {
        return Ok(None);
    }
    bytes.resize(len as usize, 0);
    comm.broadcast(&mut bytes, 0)?;
    Ok(Some(bytes))
}

/// What a backup must have been written with for this run to resume from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    batch_size: u64,
    seed: u64,
    accumulate: u64,
    train: u64,
    validation: u64,
    callbacks: u64,
}

impl Fingerprint {
    const NAMES: [&'static str; 6] = [
        "batch_size",
        "seed",
        "accumulate",
        "training samples",
        "validation samples",
        "callbacks",
    ];

    fn values(&self) -> [u64; 6] {
        [
            self.batch_size,
            self.seed,
            self.accumulate,
            self.train,
            self.validation,
            self.callbacks,
        ]
    }
}

/// The running sums of an epoch, up to the batch `batch` (the next to train).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sums {
    batch: usize,
    total: f64,
    samples: usize,
    correct: usize,
    counted: usize,
    norms: f64,
    steps: usize,
}

/// Where training stands: the epoch and the sums of its batches so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Position {
    epoch: usize,
    sums: Sums,
}

const EPOCH_FIELDS: [&str; 11] = [
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "grad_norm",
    "top_k",
    "val_top_k",
    "f1_macro",
    "val_f1_macro",
    "seconds",
];

fn epoch_fields(log: &EpochLog) -> [Option<f64>; 11] {
    [
        Some(log.loss),
        log.accuracy,
        log.val_loss,
        log.val_accuracy,
        Some(log.learning_rate),
        log.grad_norm,
        log.top_k,
        log.val_top_k,
        log.f1_macro,
        log.val_f1_macro,
        Some(log.seconds),
    ]
}

/// Writes everything `fit` would need to carry on from `at` to the backup file.
fn back_up<T: Float, M: Model<T>, O: Optimizer<T>>(
    backup: &Backup,
    fingerprint: &Fingerprint,
    at: &Position,
    fit: &FitState<'_, T, M>,
    optimizer: &O,
    callbacks: &[&mut dyn Callback<T, M>],
    train_counts: Option<&MetricCounts>,
    outputs: &[OutputScore],
) -> Result<()> {
    let mut state = ResumeState::new();
    state.set_scope("fit/");
    for (name, value) in Fingerprint::NAMES.iter().zip(fingerprint.values()) {
        state.put_count(name, value);
    }
    let sums = &at.sums;
    for (name, value) in [
        ("epoch", at.epoch),
        ("batch", sums.batch),
        ("samples", sums.samples),
        ("correct", sums.correct),
        ("counted", sums.counted),
        ("steps", sums.steps),
    ] {
        state.put_count(name, value as u64);
    }
    state.put_number("total", sums.total);
    state.put_number("norms", sums.norms);
    state.put_number("learning_rate", fit.learning_rate);
    if let Some(counts) = train_counts {
        state.put_counts("metric_counts", &counts.to_counts());
    }
    state.put_count("outputs", outputs.len() as u64);
    for (k, score) in outputs.iter().enumerate() {
        state.put_number(&format!("outputs/{k}/loss"), score.loss);
        state.put_number(&format!("outputs/{k}/correct"), score.correct);
        state.put_number(&format!("outputs/{k}/counted"), score.counted);
    }
    let history = &*fit.history;
    state.put_count("history", history.epochs.len() as u64);
    state.put_count("stopped_early", u64::from(history.stopped_early));
    if let Some(best) = history.best_epoch {
        state.put_count("best_epoch", best as u64);
    }
    for (i, log) in history.epochs.iter().enumerate() {
        for (field, value) in EPOCH_FIELDS.iter().zip(epoch_fields(log)) {
            state.put_optional(&format!("history/{i}/{field}"), value);
        }
        for (k, output) in log.outputs.iter().enumerate() {
            let key = |field: &str| format!("history/{i}/outputs/{k}/{field}");
            state.put_number(&key("loss"), output.loss);
            state.put_optional(&key("accuracy"), output.accuracy);
            state.put_optional(&key("val_loss"), output.val_loss);
            state.put_optional(&key("val_accuracy"), output.val_accuracy);
        }
    }
    state.set_scope("optimizer/");
    optimizer.save_state(&mut state)?;
    for (i, callback) in callbacks.iter().enumerate() {
        state.set_scope(&format!("callback/{i}/"));
        callback.save_state(&mut state);
    }
    fit.model
        .state(SEALED)
        .write_backup(M::SPEC, &mut state, &backup.path)
}

/// Reads the backup and puts everything back: callbacks, optimiser, history, model
/// (last, so that a backup that fails a check leaves the model as it was). Returns
/// where training carries on.
fn restore<T: Float, M: Model<T>, O: Optimizer<T>>(
    backup: &Backup,
    fingerprint: &Fingerprint,
    fit: &mut FitState<'_, T, M>,
    optimizer: &mut O,
    callbacks: &mut [&mut dyn Callback<T, M>],
    train_counts: Option<&mut MetricCounts>,
    bytes: Option<&[u8]>,
    (names, outputs): (&[&'static str], &mut [OutputScore]),
) -> Result<Position> {
    let path = &backup.path;
    let (mut state, model) = fit.model.state(SEALED).read_backup(M::SPEC, path, bytes)?;
    state.set_scope("fit/");
    let mut differences = Vec::new();
    for (name, value) in Fingerprint::NAMES.iter().zip(fingerprint.values()) {
        let saved = state.count(name)?;
        if saved != value {
            differences.push(format!("{name} {saved} (this run: {value})"));
        }
    }
    if !differences.is_empty() {
        return Err(Error::Mismatch(format!(
            "{} was written by a run with {}; resume with the same settings and data, or remove it to start afresh",
            path.display(),
            differences.join(", ")
        )));
    }
    let at = Position {
        epoch: state.size("epoch")?,
        sums: Sums {
            batch: state.size("batch")?,
            total: state.number("total")?,
            samples: state.size("samples")?,
            correct: state.size("correct")?,
            counted: state.size("counted")?,
            norms: state.number("norms")?,
            steps: state.size("steps")?,
        },
    };
    let mut history = History {
        epochs: Vec::new(),
        stopped_early: state.count("stopped_early")? != 0,
        best_epoch: match state.counts("best_epoch") {
            Ok(_) => Some(state.size("best_epoch")?),
            Err(_) => None,
        },
    };
    let epochs = state.size("history")?;
    if epochs != at.epoch && epochs != at.epoch + 1 {
        return Err(Error::format(
            path,
            "the history does not match the epoch reached",
        ));
    }
    // A backup of a model with several outputs holds each one's figures.
    if state.size("outputs")? != names.len() {
        return Err(Error::format(
            path,
            "the backup's outputs do not match the loss's",
        ));
    }
    for (k, score) in outputs.iter_mut().enumerate() {
        *score = OutputScore {
            loss: state.number(&format!("outputs/{k}/loss"))?,
            correct: state.number(&format!("outputs/{k}/correct"))?,
            counted: state.number(&format!("outputs/{k}/counted"))?,
        };
    }
    for epoch in 0..epochs {
        let field = |name: &str| state.optional_number(&format!("history/{epoch}/{name}"));
        let required = |name: &str| state.number(&format!("history/{epoch}/{name}"));
        let mut logs = Vec::with_capacity(names.len());
        for (k, &name) in names.iter().enumerate() {
            let key = |field: &str| format!("history/{epoch}/outputs/{k}/{field}");
            logs.push(OutputLog {
                name,
                loss: state.number(&key("loss"))?,
                accuracy: state.optional_number(&key("accuracy")),
                val_loss: state.optional_number(&key("val_loss")),
                val_accuracy: state.optional_number(&key("val_accuracy")),
            });
        }
        history.epochs.push(EpochLog {
            epoch,
            loss: required("loss")?,
            accuracy: field("accuracy"),
            val_loss: field("val_loss"),
            val_accuracy: field("val_accuracy"),
            learning_rate: required("learning_rate")?,
            grad_norm: field("grad_norm"),
            top_k: field("top_k"),
            val_top_k: field("val_top_k"),
            f1_macro: field("f1_macro"),
            val_f1_macro: field("val_f1_macro"),
            seconds: required("seconds")?,
            outputs: logs,
        });
    }
    let learning_rate = state.number("learning_rate")?;
    // Counts of a partly trained epoch; an epoch's start has none.
    if let Some(counts) = train_counts.filter(|_| at.sums.batch > 0) {
        let saved = state.counts("metric_counts")?;
        if !counts.restore_counts(saved) {
            return Err(Error::format(
                path,
                "the metric counts do not match the metrics asked for",
            ));
        }
    }
    *fit.history = history;
    fit.learning_rate = learning_rate;
    for (i, callback) in callbacks.iter_mut().enumerate() {
        state.set_scope(&format!("callback/{i}/"));
        callback.restore_state(&state, fit)?;
    }
    state.set_scope("optimizer/");
    optimizer.restore_state(&state, M::SPEC.param_count)?;
    fit.model.state_mut(SEALED).commit_backup(model);
    Ok(at)
}
