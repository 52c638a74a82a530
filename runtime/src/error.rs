//! The one error type of the runtime.
//!
//! ```
//! use kiln::prelude::*;
//! kiln::model! { struct Net { input: [3], out: Dense(2) } }
//! let mut net = Net::<f32>::new(0);
//! let x = TensorRef::<f32, Shape1<3>>::new(&[1.0, 2.0, 3.0])?;
//! match net.train_step(x, &[5usize][..], &CrossEntropy::default(), &mut Sgd::new(0.1)) {
//!     Err(Error::LabelOutOfRange { label: 5, classes: 2, .. }) => {} // nothing was changed
//!     other => panic!("expected a label error, got {other:?}"),
//! }
//! # Ok::<(), kiln::Error>(())
//! ```

/// Everything that can go wrong at run time, as a value rather than a panic.
///
/// Each variant carries what a caller needs to act on it, and its message says it:
///
/// ```
/// use kiln_runtime::{Error, Tensor, Shape1};
/// let err = Tensor::<f32, Shape1<3>>::from_vec(vec![1.0; 7]).unwrap_err();
/// assert_eq!(err, Error::BatchLength { len: 7, sample_size: 3 });
/// assert_eq!(
///     err.to_string(),
///     "batch of 7 values is not a whole number of samples of 3 values"
/// );
/// ```
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
    /// An input value that is NaN or infinite, in a batch given to training or
    /// evaluation; the batch was not used.
    #[error("input value {value} at position {index} is not finite; the batch was not used")]
    NonFiniteInput {
        /// The value.
        value: f64,
        /// Its position in the batch buffer.
        index: usize,
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
    /// An input token id that is not an integer in `0..vocab` (for models that start
    /// with an `Embedding`).
    #[error("token id {id} at position {index} is not an integer in 0..{vocab}")]
    TokenOutOfRange {
        /// The offending value, as f64.
        id: f64,
        /// Its position in the input batch.
        index: usize,
        /// The embedding's vocabulary size.
        vocab: usize,
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
    /// The gradients' global norm is NaN or infinite, so clipping cannot scale them;
    /// parameters were left as they were.
    #[error("gradient norm is not finite ({norm}); parameters were not updated")]
    NonFiniteGradient {
        /// The norm computed.
        norm: f64,
    },
    /// A gradient is NaN or infinite (an overflow in the backward pass, a layer of
    /// one's own that returns NaN); the step was not made: parameters, buffers and the
    /// optimiser's state are as they were.
    #[error(
        "gradient of {tensor}[{index}] is {value} at step {step}; parameters were not updated"
    )]
    NonFiniteParameterGradient {
        /// The parameter tensor, by its full name.
        tensor: String,
        /// The value's position in the tensor (row-major).
        index: usize,
        /// The gradient.
        value: f64,
        /// Index of the training step (0-based count of successful steps before it).
        step: u64,
    },
    /// A training step's forward pass left a buffer value (a batch norm's running mean
    /// or variance) NaN or infinite, as activations near the type's range do; the step
    /// was not made: parameters and buffers are as they were.
    #[error(
        "buffer {tensor}[{index}] became {value} at step {step}; parameters and buffers were not updated"
    )]
    NonFiniteBuffer {
        /// The buffer tensor, by its full name.
        tensor: String,
        /// The value's position in the tensor.
        index: usize,
        /// The value the forward pass computed.
        value: f64,
        /// Index of the training step (0-based count of successful steps before it).
        step: u64,
    },
    /// [`Model::grads`](crate::Model::grads) with no gradients to show: no backward
    /// pass has run (`step` is `None`), or the last training step (plain SGD, with
    /// nothing between the gradients and the update) added its dense layers' updates
    /// straight into the weights without storing their gradients.
    #[error("{}", match .step {
        None => "no gradients are stored: no backward pass has run".to_string(),
        Some(step) => format!(
            "the gradients of step {step} were applied without being stored (plain SGD \
             updates inside the backward pass); run backward or value_and_grad for them"
        ),
    })]
    GradientsNotStored {
        /// The training step whose gradients were not stored, if one ran.
        step: Option<u64>,
    },
    /// [`Model::to_onnx`](crate::Model::to_onnx) on a model with a layer the ONNX
    /// exporter does not cover (see [`onnx`](crate::onnx)); nothing was written.
    #[error("{model} cannot be exported to ONNX: its layer {layer} has no ONNX export yet")]
    OnnxUnsupported {
        /// The model's name.
        model: &'static str,
        /// The layer, as written in the model (`Lstm(64)`).
        layer: &'static str,
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
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What the operating system said.
        message: String,
    },
    /// A file was read but its contents are malformed (bad magic number, truncated
    /// data, wrong dimensions, unparsable values).
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong, and where.
        reason: String,
    },
    /// Two inputs that must agree do not (image and label counts, feature widths).
    #[error("{0}")]
    Mismatch(String),
    /// A saved model whose tensors do not match the model loading it; every problem is
    /// listed, and the model is left unchanged.
    #[error("{path}: the file does not match the model:\n  {}", problems.join("\n  "))]
    StateDict {
        /// The file.
        path: String,
        /// Each missing, extra or wrongly shaped tensor.
        problems: Vec<String>,
    },
    /// Data-parallel training cannot go on: the ranks disagree on the model, the data
    /// or the settings, or a collective failed (see [`crate::distributed`]).
    #[error("data-parallel training: {0}")]
    Distributed(String),
    /// Something asked of a part that cannot do it (an optimiser of one's own without
    /// [`save_state`](crate::Optimizer::save_state), asked to back up training).
    #[error("{0}")]
    Unsupported(&'static str),
}

impl Error {
    /// An I/O error on `path`.
    ///
    /// ```
    /// use kiln_runtime::Error;
    /// let path = std::path::Path::new("/no/such/dir/model.safetensors");
    /// let err = Error::io(path, &std::fs::read(path).unwrap_err());
    /// assert!(matches!(&err, Error::Io { path, .. } if path.ends_with("model.safetensors")));
    /// ```
    pub fn io(path: &std::path::Path, error: &std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            message: error.to_string(),
        }
    }

    /// A malformed file.
    ///
    /// ```
    /// use kiln_runtime::Error;
    /// let err = Error::format(std::path::Path::new("digits.csv"), "row 3 has 63 values");
    /// assert!(err.to_string().contains("row 3 has 63 values"));
    /// ```
    pub fn format(path: &std::path::Path, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

/// `Result` with the runtime's [`Error`].
///
/// ```
/// use kiln_runtime::{Result, Tensor, Shape1};
/// fn ones(n: usize) -> Result<Tensor<f32, Shape1<2>>> {
///     Tensor::from_vec(vec![1.0; 2 * n])
/// }
/// assert!(ones(3).is_ok());
/// ```
pub type Result<T, E = Error> = core::result::Result<T, E>;
