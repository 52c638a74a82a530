//! The one error type of the runtime.

/// Everything that can go wrong at run time, as a value rather than a panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A batch buffer whose length is not a whole number of samples.
    #[error("batch of {len} values is not a whole number of samples of {sample_size} values")]
    BatchLength {
        /// Length of the buffer that was given.
        len: usize,
        /// Values in one sample.
        sample_size: usize,
    },
    /// A batch with no samples.
    #[error("empty batch: at least one sample is needed")]
    EmptyBatch,
    /// Targets that do not match the outputs they are compared with.
    #[error("targets: expected {expected} values for this batch, got {actual}")]
    TargetLength {
        /// Number of target values the loss needs for this batch.
        expected: usize,
        /// Number of target values given.
        actual: usize,
    },
    /// A class label outside `0..classes`.
    #[error("label {label} at position {index} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// The offending label.
        label: usize,
        /// Its position in the label slice.
        index: usize,
        /// Number of classes the model outputs.
        classes: usize,
    },
    /// A target value outside what the loss accepts (a probability outside `[0, 1]`).
    #[error("target {value} at position {index} is invalid: {reason}")]
    InvalidTarget {
        /// The offending value, as f64.
        value: f64,
        /// Its position.
        index: usize,
        /// What the loss requires.
        reason: &'static str,
    },
    /// The loss became NaN or infinite; parameters were left as they were before the step.
    #[error("loss is not finite ({loss}) at step {step}; parameters were not updated")]
    NonFiniteLoss {
        /// The value computed.
        loss: f64,
        /// Index of the training step (0-based count of successful steps before it).
        step: u64,
    },
    /// A hyper-parameter outside its domain.
    #[error("invalid {name}: {value} ({reason})")]
    InvalidHyperParameter {
        /// Which parameter.
        name: &'static str,
        /// Its value.
        value: f64,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A parameter buffer of the wrong length for this model.
    #[error("parameter buffer has {actual} values, the model has {expected}")]
    ParameterLength {
        /// The model's parameter count.
        expected: usize,
        /// Length given.
        actual: usize,
    },
}

/// `Result` with the runtime's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;
