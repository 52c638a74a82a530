//! Gradient checking: a model's backward pass against central finite differences in
//! f64, for every parameter tensor and for the input.
//!
//! ```
//! use kiln::gradcheck::{check_gradients, GradCheck};
//! use kiln::prelude::*;
//!
//! kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
//!
//! let model = Net::<f64>::new(0);
//! let x = [0.5, -1.0, 2.0, 1.0, 0.0, -0.5];
//! let labels = [1usize, 0];
//! let report = check_gradients(&model, &x, &labels[..], &CrossEntropy::default(),
//!                              GradCheck::default())?;
//! println!("{report}");
//! assert!(report.worst() < 1e-6); // false for a NaN gradient too
//! assert_eq!(report.tensors.len(), 5); // four parameter tensors and the input
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! For each value `v` checked, the numeric derivative is
//! `(L(v + h) − L(v − h)) / 2h` with the training-mode forward pass (so batch norm uses
//! the batch's statistics, as the backward pass does), and the error is
//! `|analytic − numeric| / max(1, |numeric|)`. With `h = 1e-6` a correct backward pass
//! gives errors around `1e-9` to `1e-7` in f64; an error near 1 is a wrong gradient.
//! Kinks give larger errors where a probe crosses them: a ReLU input or a max-pool tie
//! within `h` of the point. The model must be deterministic in training mode (dropout
//! with `p = 0`), and is left untouched: the check runs on a copy.

use std::fmt;

use crate::loss::{Loss, OutputLayout};
use crate::model::Model;
use crate::tensor::TensorRef;
use crate::{Error, Result};

/// How to check.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
/// # let dir = std::env::temp_dir();
/// use kiln::gradcheck::{check_gradients, GradCheck};
/// let x = [0.5, -1.0, 2.0];
/// // Probe at most 3 values of each tensor, skip the input.
/// let options = GradCheck { per_tensor: Some(3), input: false, ..GradCheck::default() };
/// let report = check_gradients(&Net::<f64>::new(0), &x, &[0usize][..], &CrossEntropy::default(), options)?;
/// assert!(report.tensors.iter().all(|t| t.probed <= 3 && t.name != "input"));
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// The finite-difference step `h`.
    pub step: f64,
    /// At most this many values of each tensor (evenly spaced through it) are probed,
    /// two forward passes each; `None` probes them all.
    pub per_tensor: Option<usize>,
    /// Whether dL/d(input) is checked too (refused for a model that reads token ids).
    pub input: bool,
}

impl Default for GradCheck {
    fn default() -> Self {
        Self {
            step: 1e-6,
            per_tensor: None,
            input: true,
        }
    }
}

/// The worst disagreement found in one tensor.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
/// # let dir = std::env::temp_dir();
/// use kiln::gradcheck::{check_gradients, GradCheck};
/// let x = [0.5, -1.0, 2.0];
/// let report = check_gradients(&Net::<f64>::new(0), &x, &[0usize][..], &CrossEntropy::default(), GradCheck::default())?;
/// let weight = &report.tensors[0];
/// assert_eq!((weight.name.as_str(), weight.probed), ("fc.weight", 12));
/// assert!((weight.analytic - weight.numeric).abs() <= weight.worst * weight.numeric.abs().max(1.0) + 1e-15);
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TensorError {
    /// The parameter's name (`fc1.weight`), or `input`.
    pub name: String,
    /// Values probed.
    pub probed: usize,
    /// The largest relative error, and where.
    pub worst: f64,
    /// Index of the worst value in the tensor.
    pub index: usize,
    /// The backward pass's derivative there.
    pub analytic: f64,
    /// The finite difference there.
    pub numeric: f64,
}

/// What [`check_gradients`] found: one row per parameter tensor, then the input.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
/// # let dir = std::env::temp_dir();
/// use kiln::gradcheck::{check_gradients, GradCheck};
/// let x = [0.5, -1.0, 2.0];
/// let report = check_gradients(&Net::<f64>::new(0), &x, &[0usize][..], &CrossEntropy::default(), GradCheck::default())?;
/// assert_eq!(report.model, "Net");
/// let names: Vec<&str> = report.tensors.iter().map(|t| t.name.as_str()).collect();
/// assert_eq!(names, ["fc.weight", "fc.bias", "out.weight", "out.bias", "input"]);
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GradReport {
    /// The model's name.
    pub model: &'static str,
    /// One entry per parameter tensor (in the model's order), then `input` if checked.
    pub tensors: Vec<TensorError>,
}

impl GradReport {
    /// The largest relative error over every tensor; NaN if a gradient was NaN.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
    /// # let dir = std::env::temp_dir();
    /// use kiln::gradcheck::{check_gradients, GradCheck};
    /// let x = [0.5, -1.0, 2.0];
    /// let report = check_gradients(&Net::<f64>::new(0), &x, &[0usize][..], &CrossEntropy::default(), GradCheck::default())?;
    /// assert!(report.worst() < 1e-6);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn worst(&self) -> f64 {
        self.tensors.iter().map(|t| t.worst).fold(0.0, |a, b| {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.max(b)
            }
        })
    }

    /// The tensor with the largest error, if any was checked.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
    /// # let dir = std::env::temp_dir();
    /// use kiln::gradcheck::{check_gradients, GradCheck};
    /// let x = [0.5, -1.0, 2.0];
    /// let report = check_gradients(&Net::<f64>::new(0), &x, &[0usize][..], &CrossEntropy::default(), GradCheck::default())?;
    /// assert_eq!(report.worst_tensor().unwrap().worst, report.worst());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn worst_tensor(&self) -> Option<&TensorError> {
        self.tensors
            .iter()
            .max_by(|a, b| a.worst.total_cmp(&b.worst))
    }
}

impl fmt::Display for GradReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(0)
            .max(6);
        writeln!(f, "gradient check of {}", self.model)?;
        writeln!(
            f,
            "{:<width$}  {:>7}  {:>10}  {:>8}  {:>14}  {:>14}",
            "tensor", "probed", "worst", "at", "analytic", "numeric"
        )?;
        for t in &self.tensors {
            writeln!(
                f,
                "{:<width$}  {:>7}  {:>10.2e}  {:>8}  {:>14.6e}  {:>14.6e}",
                t.name, t.probed, t.worst, t.index, t.analytic, t.numeric
            )?;
        }
        write!(f, "worst relative error {:.2e}", self.worst())
    }
}

/// Checks `model`'s gradients of `loss` at the batch `x` (`target` as for
/// [`train_step`](Model::train_step)) against central differences, on a copy of the
/// model. Returns the worst error of each parameter tensor and of the input.
///
/// # Errors
/// A bad batch or target (as `train_step`), a non-finite loss, an invalid step or
/// `per_tensor` of 0, or an input gradient asked of a model that reads token ids.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
/// # let dir = std::env::temp_dir();
/// use kiln::gradcheck::{check_gradients, GradCheck};
/// let x = [0.5, -1.0, 2.0];
/// let report = check_gradients(&Net::<f64>::new(0), &x, &[0usize][..], &CrossEntropy::default(), GradCheck::default())?;
/// assert!(report.worst() < 1e-6);
/// let bad = GradCheck { step: 0.0, ..GradCheck::default() };
/// assert!(check_gradients(&Net::<f64>::new(0), &x, &[0usize][..], &CrossEntropy::default(), bad).is_err());
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn check_gradients<M, L, Y>(
    model: &M,
    x: &[f64],
    target: &Y,
    loss: &L,
    options: GradCheck,
) -> Result<GradReport>
where
    M: Model<f64> + Clone,
    L: Loss<f64>,
    Y: AsRef<L::Target> + ?Sized,
{
    let target = target.as_ref();
    let h = options.step;
    if !(h.is_finite() && h > 0.0) {
        return Err(Error::InvalidHyperParameter {
            name: "step",
            value: h,
            reason: "must be finite and above 0",
        });
    }
    if options.per_tensor == Some(0) {
        return Err(Error::InvalidHyperParameter {
            name: "per_tensor",
            value: 0.0,
            reason: "must probe at least one value",
        });
    }
    M::SPEC.check_input(x)?;
    let mut model = model.clone();
    let batch = TensorRef::<f64, M::Input>::new(x)?.batch();
    let layout = OutputLayout {
        batch,
        width: *M::SPEC.output.last().unwrap_or(&1),
    };
    // The analytic gradients.
    let output = model.forward_train(TensorRef::new(x)?).to_vec();
    let mut grad_output = vec![0.0; output.len()];
    let value = loss.evaluate(&output, target, layout, Some(&mut grad_output))?;
    if !value.is_finite() {
        return Err(Error::NonFiniteLoss {
            loss: value,
            step: 0,
        });
    }
    let grad_input = if options.input {
        Some(model.backward_to_input(&grad_output)?.to_vec())
    } else {
        model.backward(&grad_output)?;
        None
    };
    let grads = model.grads()?.as_slice().to_vec();
    let params = model.params().as_slice().to_vec();

    let loss_at = |model: &mut M, x: &[f64]| -> Result<f64> {
        let output = model.forward_train(TensorRef::new(x)?);
        loss.evaluate(output, target, layout, None)
    };
    let probes = |len: usize| -> Vec<usize> {
        match options.per_tensor {
            Some(n) if n < len => (0..n).map(|k| k * len / n).collect(),
            _ => (0..len).collect(),
        }
    };
    let mut tensors = Vec::new();
    let mut probe = params.clone();
    for info in M::SPEC.params {
        let range = info.range();
        let mut row = TensorError::empty(&info.full_name());
        for i in probes(range.len()) {
            let at = range.start + i;
            probe[at] = params[at] + h;
            model.set_params(&probe)?;
            let up = loss_at(&mut model, x)?;
            probe[at] = params[at] - h;
            model.set_params(&probe)?;
            let down = loss_at(&mut model, x)?;
            probe[at] = params[at];
            record(&mut row, i, grads[at], (up - down) / (2.0 * h));
        }
        tensors.push(row);
    }
    model.set_params(&params)?;
    if let Some(grad_input) = grad_input {
        let mut row = TensorError::empty("input");
        let mut probe = x.to_vec();
        for i in probes(x.len()) {
            probe[i] = x[i] + h;
            let up = loss_at(&mut model, &probe)?;
            probe[i] = x[i] - h;
            let down = loss_at(&mut model, &probe)?;
            probe[i] = x[i];
            record(&mut row, i, grad_input[i], (up - down) / (2.0 * h));
        }
        tensors.push(row);
    }
    Ok(GradReport {
        model: M::SPEC.name,
        tensors,
    })
}

impl TensorError {
    /// A tensor nothing has been probed of yet.
    fn empty(name: &str) -> Self {
        Self {
            name: name.to_string(),
            probed: 0,
            worst: 0.0,
            index: 0,
            analytic: 0.0,
            numeric: 0.0,
        }
    }
}

/// Counts one probe of `row`, keeping it if it is the worst so far.
fn record(row: &mut TensorError, index: usize, analytic: f64, numeric: f64) {
    let error = (analytic - numeric).abs() / 1f64.max(numeric.abs());
    row.probed += 1;
    // A NaN error (a NaN gradient) counts as the worst.
    if row.probed == 1 || error.is_nan() || error > row.worst {
        row.worst = error;
        row.index = index;
        row.analytic = analytic;
        row.numeric = numeric;
    }
}
