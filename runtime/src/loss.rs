//! Losses and regularisation terms.
//!
//! A [`Loss`] turns a batch of model outputs and targets into one number and, in the
//! same pass, writes dL/d`output` for the backward pass. All follow PyTorch's
//! definitions and default reductions:
//!
//! | loss | target | per-element value |
//! | --- | --- | --- |
//! | [`Mse`] | same shape as the output | `(y - t)^2` |
//! | [`BinaryCrossEntropy`] | probabilities in `[0, 1]` | `-(t ln y + (1-t) ln(1-y))`, logs clamped at -100 |
//! | [`BceWithLogits`] | probabilities in `[0, 1]` | `max(x,0) - x t + ln(1 + e^{-|x|})` |
//! | [`CrossEntropy`] | one class index per row | `-log_softmax(x)[t]`, fused and stable |
//!
//! [`Reduction::Mean`] divides by the number of elements (rows for cross-entropy),
//! [`Reduction::Sum`] does not.
//!
//! ```
//! use kiln::loss::{Loss, OutputLayout};
//! use kiln::prelude::*;
//! let layout = OutputLayout { batch: 2, width: 3 };
//! let logits = [2.0_f64, 0.0, 0.0, 0.0, 0.0, 0.0];
//! let loss = CrossEntropy::default().evaluate(&logits, &[0, 2], layout, None)?;
//! let p0 = 2f64.exp() / (2f64.exp() + 2.0);
//! assert!((loss - (-(p0.ln()) + 3f64.ln()) / 2.0).abs() < 1e-12);
//! let mse = Mse::default().evaluate(&[1.0_f64, 3.0], &[0.0, 1.0], OutputLayout { batch: 2, width: 1 }, None)?;
//! assert_eq!(mse, 2.5);
//! # Ok::<(), kiln::Error>(())
//! ```

use crate::layers::lane_sum;
use crate::layers::softmax::log_sum_exp_in_lanes;
use crate::simd::vectorized;
use crate::{Error, Float, Result};

/// How per-element losses are combined.
///
/// ```
/// use kiln_runtime::loss::{Loss, OutputLayout};
/// use kiln_runtime::{BceWithLogits, Reduction};
/// let layout = OutputLayout { batch: 2, width: 1 };
/// let (logits, targets) = ([0.0_f64, 0.0], [1.0, 0.0]);
/// let mean = BceWithLogits::default().evaluate(&logits, &targets, layout, None).unwrap();
/// let sum = BceWithLogits { reduction: Reduction::Sum }.evaluate(&logits, &targets, layout, None).unwrap();
/// assert!((mean - 2f64.ln()).abs() < 1e-15 && (sum - 2.0 * 2f64.ln()).abs() < 1e-15);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Average (PyTorch's default).
    #[default]
    Mean,
    /// Sum.
    Sum,
}

impl Reduction {
    fn scale<T: Float>(self, count: usize) -> T {
        match self {
            Reduction::Mean => T::ONE / T::from_f64(count as f64),
            Reduction::Sum => T::ONE,
        }
    }
}

/// How a model's output batch is laid out, as a loss needs to know it.
///
/// ```
/// use kiln_runtime::loss::OutputLayout;
/// // A batch of 4 sequences of 8 steps, 10 classes a step: 32 rows of 10.
/// let layout = OutputLayout { batch: 4, width: 10 };
/// assert_eq!(layout.rows(4 * 8 * 10), 32);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLayout {
    /// Samples in the batch.
    pub batch: usize,
    /// Length of the last axis (classes for a classifier).
    pub width: usize,
}

impl OutputLayout {
    /// Rows of `width` values: `batch` times the product of the leading sample dims.
    ///
    /// ```
    /// use kiln_runtime::loss::OutputLayout;
    /// assert_eq!(OutputLayout { batch: 2, width: 3 }.rows(6), 2);
    /// ```
    pub fn rows(&self, len: usize) -> usize {
        len / self.width
    }
}

/// A training objective.
///
/// ```
/// use kiln_runtime::loss::{Loss, OutputLayout};
/// use kiln_runtime::{Float, Result};
///
/// /// Mean absolute error.
/// struct L1;
///
/// impl<T: Float> Loss<T> for L1 {
///     type Target = [T];
///
///     fn evaluate(&self, output: &[T], target: &[T], _: OutputLayout, grad: Option<&mut [T]>) -> Result<T> {
///         let n = T::from_f64(output.len() as f64);
///         if let Some(grad) = grad {
///             for ((g, &y), &t) in grad.iter_mut().zip(output).zip(target) {
///                 *g = (y - t).signum0() / n;
///             }
///         }
///         Ok(output.iter().zip(target).map(|(&y, &t)| (y - t).abs()).sum::<T>() / n)
///     }
/// }
///
/// let mut grad = [0.0_f64; 2];
/// let value = L1.evaluate(&[1.0, 3.0], &[2.0, 2.0], OutputLayout { batch: 2, width: 1 }, Some(&mut grad))?;
/// assert_eq!((value, grad), (1.0, [-0.5, 0.5]));
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub trait Loss<T: Float> {
    /// What the output is compared with: `[T]` for regression-style losses, `[usize]`
    /// class indices for [`CrossEntropy`]. (It views as itself, so generic code can
    /// pass a `&Self::Target` wherever a target is taken by `AsRef`.)
    type Target: ?Sized + AsRef<Self::Target>;

    /// The loss of `output` against `target`; when `grad_output` is given, also writes
    /// dL/d`output` into it (replacing its contents).
    ///
    /// Targets are validated before anything is written: a wrong length, a label out of
    /// range or an invalid probability is an [`Error`].
    fn evaluate(
        &self,
        output: &[T],
        target: &Self::Target,
        layout: OutputLayout,
        grad_output: Option<&mut [T]>,
    ) -> Result<T>;

    /// How the loss combines its samples, which says how gradients accumulated over
    /// micro-batches combine into the whole batch's ([`crate::Model::accumulate_gradients`]).
    fn reduction(&self) -> Reduction {
        Reduction::Mean
    }

    /// Targets per row of `width` outputs: one per output value for an element-wise
    /// loss (the default), one class label per row for [`CrossEntropy`]. A model with
    /// several outputs lays out each sample's targets with it.
    fn targets_per_row(&self, width: usize) -> usize {
        width
    }

    /// The number of model outputs the loss scores: 1, or for the loss of a model with
    /// several outputs (its `…Outputs` of losses) their number. Accuracy and the label
    /// metrics of [`fit`](crate::Model::fit) and [`evaluate`](crate::Model::evaluate)
    /// read one output's rows against one label each, so they are left out for more
    /// than one; `evaluate_outputs` reports them output by output.
    fn outputs(&self) -> usize {
        1
    }

    /// For the loss of a model with several outputs: their names, in order, which
    /// [`fit`](crate::Model::fit) reports each output's loss and accuracy under
    /// ([`EpochLog::outputs`](crate::train::EpochLog::outputs)). Empty for one output.
    fn output_names(&self) -> &'static [&'static str] {
        &[]
    }

    /// Correct and counted predictions of `output` against targets that are not class
    /// labels but name a class per row all the same (one-hot rows, or probabilities:
    /// [`CategoricalCrossEntropy`]), as Keras' categorical accuracy counts them: the
    /// output's largest value where the target's is. `None` for other losses (class
    /// labels are counted by the label type itself).
    fn correct(
        &self,
        _output: &[T],
        _target: &Self::Target,
        _layout: OutputLayout,
    ) -> Option<(usize, usize)> {
        None
    }

    /// [`evaluate`](Self::evaluate) that, for the loss of a model with several outputs,
    /// also adds to `scores` (one per output; none to skip) each output's loss, times
    /// the batch and `weight` (the weight of this loss within an enclosing one), and for
    /// class labels its correct and counted predictions: how `fit` reports each output
    /// without evaluating the loss twice. For one output it is `evaluate`.
    fn evaluate_scored(
        &self,
        output: &[T],
        target: &Self::Target,
        layout: OutputLayout,
        grad_output: Option<&mut [T]>,
        _weight: f64,
        _scores: &mut [OutputScore],
    ) -> Result<T> {
        self.evaluate(output, target, layout, grad_output)
    }
}

/// One output's running score over batches: its loss times the samples, and its
/// correct and counted predictions for class labels.
///
/// ```
/// use kiln_runtime::loss::OutputScore;
/// let mut score = OutputScore::default();
/// score.loss += 0.5 * 32.0; // a batch of 32 with a mean loss of 0.5
/// score.correct += 30.0;
/// score.counted += 32.0;
/// assert_eq!(score.correct / score.counted, 0.9375);
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutputScore {
    /// Σ loss × batch.
    pub loss: f64,
    /// Predictions that were right.
    pub correct: f64,
    /// Predictions counted (0 for targets that are not class labels).
    pub counted: f64,
}

/// The [`Loss`] methods that a wrapper around another loss (in a field `loss`) takes
/// from it unchanged: [`Weighted`] and `fit`'s scoring wrapper both use it, so that a
/// method added to `Loss` is forwarded by both or neither.
macro_rules! forward_to_inner_loss {
    () => {
        fn reduction(&self) -> $crate::loss::Reduction {
            self.loss.reduction()
        }

        fn targets_per_row(&self, width: usize) -> usize {
            self.loss.targets_per_row(width)
        }

        fn correct(
            &self,
            output: &[T],
            target: &Self::Target,
            layout: $crate::loss::OutputLayout,
        ) -> Option<(usize, usize)> {
            self.loss.correct(output, target, layout)
        }

        fn outputs(&self) -> usize {
            self.loss.outputs()
        }

        fn output_names(&self) -> &'static [&'static str] {
            self.loss.output_names()
        }
    };
}
pub(crate) use forward_to_inner_loss;

/// A loss scaled by a weight, for one output of a model with several:
/// `Mse::default().weight(0.2)`. Its value and gradient are the loss's times the weight.
///
/// ```
/// use kiln_runtime::loss::{Loss, Mse, OutputLayout};
/// let layout = OutputLayout { batch: 2, width: 1 };
/// let l = Mse::default().weight(0.5).evaluate(&[1.0_f64, 3.0], &[0.0, 1.0], layout, None);
/// assert_eq!(l.unwrap(), 1.25);
/// assert!(Mse::default().weight(-1.0).evaluate(&[1.0_f64], &[0.0], layout, None).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Weighted<L> {
    /// The loss.
    pub loss: L,
    /// Its weight, finite and not negative.
    pub weight: f64,
}

impl<T: Float, L: Loss<T>> Loss<T> for Weighted<L> {
    type Target = L::Target;

    fn evaluate(
        &self,
        output: &[T],
        target: &Self::Target,
        layout: OutputLayout,
        grad_output: Option<&mut [T]>,
    ) -> Result<T> {
        self.evaluate_scored(output, target, layout, grad_output, 1.0, &mut [])
    }

    /// The inner loss's value and gradient times the weight, its scores scaled alike.
    fn evaluate_scored(
        &self,
        output: &[T],
        target: &Self::Target,
        layout: OutputLayout,
        mut grad_output: Option<&mut [T]>,
        weight: f64,
        scores: &mut [OutputScore],
    ) -> Result<T> {
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(Error::InvalidHyperParameter {
                name: "loss weight",
                value: self.weight,
                reason: "must be finite and not negative",
            });
        }
        let grad = grad_output.as_deref_mut();
        let value = (self.loss).evaluate_scored(
            output,
            target,
            layout,
            grad,
            weight * self.weight,
            scores,
        )?;
        let weight = T::from_f64(self.weight);
        if let Some(grad) = grad_output {
            for g in grad {
                *g *= weight;
            }
        }
        Ok(value * weight)
    }

    forward_to_inner_loss!();
}

/// `.weight(w)` on each built-in loss.
macro_rules! weighting {
    ($($loss:ident),*) => {$(
        impl $loss {
            /// This loss scaled by `weight`, for one output of a model with several.
            ///
            #[doc = concat!("```\nuse kiln_runtime::loss::", stringify!($loss), ";\n// This output's loss counts a fifth of an unweighted one's.\nlet weighted = ", stringify!($loss), "::default().weight(0.2);\nassert_eq!((weighted.loss, weighted.weight), (", stringify!($loss), "::default(), 0.2));\n```")]
            pub const fn weight(self, weight: f64) -> Weighted<Self> {
                Weighted { loss: self, weight }
            }
        }
    )*};
}
weighting!(
    Mse,
    BinaryCrossEntropy,
    BceWithLogits,
    CrossEntropy,
    CategoricalCrossEntropy
);

fn check_target_len(expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::TargetLength { expected, actual })
    }
}

/// Every target in `[0, 1]` (not NaN), else an error with `reason`.
fn check_probabilities<T: Float>(target: &[T], reason: &'static str) -> Result<()> {
    match target.iter().position(|&t| !(t >= T::ZERO && t <= T::ONE)) {
        None => Ok(()),
        Some(index) => Err(Error::InvalidTarget {
            value: target[index].to_f64(),
            index,
            reason,
        }),
    }
}

/// Mean squared error, `(y - t)^2` per element.
///
/// ```
/// use kiln_runtime::loss::{Loss, Mse, OutputLayout};
/// let layout = OutputLayout { batch: 2, width: 1 };
/// let l = Mse::default().evaluate(&[1.0_f64, 3.0], &[0.0, 1.0], layout, None).unwrap();
/// assert_eq!(l, 2.5);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mse {
    /// Mean or sum over all elements.
    pub reduction: Reduction,
}

impl<T: Float> Loss<T> for Mse {
    type Target = [T];

    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn evaluate(
        &self,
        output: &[T],
        target: &[T],
        _layout: OutputLayout,
        grad_output: Option<&mut [T]>,
    ) -> Result<T> {
        check_target_len(output.len(), target.len())?;
        let scale: T = self.reduction.scale(output.len());
        let two = T::from_f64(2.0) * scale;
        let mut total = T::ZERO;
        match grad_output {
            Some(grad) => {
                for ((g, &y), &t) in grad.iter_mut().zip(output).zip(target) {
                    let d = y - t;
                    total += d * d;
                    *g = two * d;
                }
            }
            None => {
                for (&y, &t) in output.iter().zip(target) {
                    total += (y - t) * (y - t);
                }
            }
        }
        Ok(total * scale)
    }
}

/// Binary cross-entropy on probabilities (the output of a `Sigmoid`).
///
/// As in PyTorch, each log is clamped at -100 so a saturated output gives a large but
/// finite loss, and the gradient's denominator `y (1 - y)` is clamped at 1e-12.
/// [`BceWithLogits`] is the numerically better choice.
///
/// ```
/// use kiln_runtime::loss::{Loss, OutputLayout};
/// use kiln_runtime::BinaryCrossEntropy;
/// let layout = OutputLayout { batch: 1, width: 2 };
/// let mut grad = [0.0_f64; 2];
/// let loss = BinaryCrossEntropy::default().evaluate(&[0.5, 1.0], &[1.0, 1.0], layout, Some(&mut grad)).unwrap();
/// assert!((loss - 2f64.ln() / 2.0).abs() < 1e-15); // −ln ½ and −ln 1, averaged
/// assert_eq!(grad[0], -1.0); // (y − t) / (y(1 − y)) / 2
/// assert!(BinaryCrossEntropy::default().evaluate(&[0.5], &[2.0], layout, None).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BinaryCrossEntropy {
    /// Mean or sum over all elements.
    pub reduction: Reduction,
}

impl<T: Float> Loss<T> for BinaryCrossEntropy {
    type Target = [T];

    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn evaluate(
        &self,
        output: &[T],
        target: &[T],
        _layout: OutputLayout,
        mut grad_output: Option<&mut [T]>,
    ) -> Result<T> {
        check_target_len(output.len(), target.len())?;
        check_probabilities(target, "binary cross-entropy needs targets in [0, 1]")?;
        let scale: T = self.reduction.scale(output.len());
        let floor = T::from_f64(-100.0);
        let eps = T::from_f64(1e-12);
        let mut total = T::ZERO;
        for i in 0..output.len() {
            let (y, t) = (output[i], target[i]);
            let log_y = y.ln().max(floor);
            let log_1my = (T::ONE - y).ln().max(floor);
            total -= t * log_y + (T::ONE - t) * log_1my;
            if let Some(grad) = grad_output.as_deref_mut() {
                grad[i] = scale * (y - t) / (y * (T::ONE - y)).max(eps);
            }
        }
        Ok(total * scale)
    }
}

/// Binary cross-entropy on logits: a sigmoid fused into the loss, stable for any input.
///
/// ```
/// use kiln_runtime::loss::{Loss, OutputLayout};
/// use kiln_runtime::BceWithLogits;
/// let layout = OutputLayout { batch: 2, width: 1 };
/// let mut grad = [0.0_f64; 2];
/// // A logit of 1000 for a positive costs nothing; for a negative, 1000 (no overflow).
/// let loss = BceWithLogits::default().evaluate(&[1000.0, 1000.0], &[1.0, 0.0], layout, Some(&mut grad)).unwrap();
/// assert!((loss - 500.0).abs() < 1e-9);
/// assert_eq!(grad, [0.0, 0.5]); // (σ(x) − t) / 2
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BceWithLogits {
    /// Mean or sum over all elements.
    pub reduction: Reduction,
}

impl<T: Float> Loss<T> for BceWithLogits {
    type Target = [T];

    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn evaluate(
        &self,
        output: &[T],
        target: &[T],
        _layout: OutputLayout,
        mut grad_output: Option<&mut [T]>,
    ) -> Result<T> {
        check_target_len(output.len(), target.len())?;
        check_probabilities(target, "binary cross-entropy needs targets in [0, 1]")?;
        let scale: T = self.reduction.scale(output.len());
        let mut total = T::ZERO;
        for i in 0..output.len() {
            let (x, t) = (output[i], target[i]);
            total += x.max(T::ZERO) - x * t + (-x.abs()).exp().ln_1p();
            if let Some(grad) = grad_output.as_deref_mut() {
                grad[i] = scale * (crate::layers::activation::sigmoid(x) - t);
            }
        }
        Ok(total * scale)
    }
}

/// Cross-entropy on logits with one class index per row: `log_softmax` fused into the
/// loss, so it is stable for any logits. The gradient is `softmax(x) - onehot(t)`.
///
/// A model whose output is `[classes]` needs one label per sample; one whose output is
/// `[steps, classes]` needs one label per step.
///
/// ```
/// use kiln_runtime::loss::{CrossEntropy, Loss, OutputLayout};
/// let layout = OutputLayout { batch: 1, width: 2 };
/// let l: f64 = CrossEntropy::default().evaluate(&[0.0, 0.0], &[1], layout, None).unwrap();
/// assert!((l - 2f64.ln()).abs() < 1e-15);
/// assert!(CrossEntropy::default().evaluate(&[0.0_f64, 0.0], &[2], layout, None).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrossEntropy {
    /// Mean or sum over rows.
    pub reduction: Reduction,
}

/// The softmax losses' rows, in vector lanes: each row's `lse = ln Σ e^x`
/// ([`log_sum_exp_in_lanes`]: `fast_exp`, f32's relative error below 3e-7, f64's
/// `exp`), then `row(logits, lse, target)` gives the row's loss and a writer of its
/// gradient, called where `grad_output` is given. Returns the losses' sum. (A library
/// `exp` per logit, twice, left the transformer benchmark's step 5.6 % slower.)
#[inline(always)]
fn softmax_rows<'a, T: Float, R, G: FnOnce(&mut [T])>(
    output: &'a [T],
    classes: usize,
    targets: impl IntoIterator<Item = R>,
    grad_output: Option<&mut [T]>,
    row: impl Fn(&'a [T], T, R) -> (T, G),
) -> T {
    vectorized(
        #[inline(always)]
        || {
            let mut grads = grad_output.map(|g| g.chunks_exact_mut(classes));
            let mut total = T::ZERO;
            for (logits, target) in output.chunks_exact(classes).zip(targets) {
                let (loss, write_grad) = row(logits, log_sum_exp_in_lanes(logits), target);
                total += loss;
                if let Some(g) = grads.as_mut().and_then(Iterator::next) {
                    write_grad(g);
                }
            }
            total
        },
    )
}

impl<T: Float> Loss<T> for CrossEntropy {
    type Target = [usize];

    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn targets_per_row(&self, _width: usize) -> usize {
        1
    }

    fn evaluate(
        &self,
        output: &[T],
        target: &[usize],
        layout: OutputLayout,
        grad_output: Option<&mut [T]>,
    ) -> Result<T> {
        let classes = layout.width;
        let rows = layout.rows(output.len());
        check_target_len(rows, target.len())?;
        if let Some(index) = target.iter().position(|&t| t >= classes) {
            return Err(Error::LabelOutOfRange {
                label: target[index],
                index,
                classes,
            });
        }
        let scale: T = self.reduction.scale(rows);
        let total = softmax_rows(output, classes, target, grad_output, |logits, lse, &t| {
            (lse - logits[t], move |g: &mut [T]| {
                for (gi, &x) in g.iter_mut().zip(logits) {
                    *gi = scale * (x - lse).fast_exp();
                }
                g[t] -= scale;
            })
        });
        Ok(total * scale)
    }
}

/// Softmax cross-entropy against a distribution over the classes per row, one-hot or
/// soft: `−Σ_i p_i log softmax(x)_i`, as PyTorch's `CrossEntropyLoss` with class
/// probabilities as targets and Keras' `CategoricalCrossentropy(from_logits=True)`.
/// The gradient is `softmax(x) Σ_i p_i − p`.
///
/// Its targets are values (`[T]`, as many per row as there are classes), so one output
/// that classifies and another that regresses fit in one dataset: the loss of a model
/// with several outputs takes one type of target. Accuracy counts a row right when the
/// output's largest value is where the target's is.
///
/// ```
/// use kiln_runtime::loss::{CategoricalCrossEntropy, CrossEntropy, Loss, OutputLayout};
/// let layout = OutputLayout { batch: 1, width: 3 };
/// let logits = [0.5_f64, -1.0, 2.0];
/// let soft = CategoricalCrossEntropy::default();
/// let one_hot = soft.evaluate(&logits, &[0.0, 0.0, 1.0], layout, None).unwrap();
/// let label = CrossEntropy::default().evaluate(&logits, &[2], layout, None).unwrap();
/// assert!((one_hot - label).abs() < 1e-15);
/// assert_eq!(soft.correct(&logits, &[0.0, 0.0, 1.0], layout), Some((1, 1)));
/// assert!(soft.evaluate(&logits, &[0.0, 1.5, 0.0], layout, None).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CategoricalCrossEntropy {
    /// Mean or sum over rows.
    pub reduction: Reduction,
}

impl<T: Float> Loss<T> for CategoricalCrossEntropy {
    type Target = [T];

    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn evaluate(
        &self,
        output: &[T],
        target: &[T],
        layout: OutputLayout,
        grad_output: Option<&mut [T]>,
    ) -> Result<T> {
        let classes = layout.width;
        check_target_len(output.len(), target.len())?;
        check_probabilities(
            target,
            "categorical cross-entropy needs probabilities in [0, 1]",
        )?;
        let scale: T = self.reduction.scale(layout.rows(output.len()));
        let targets = target.chunks_exact(classes);
        let total = softmax_rows(output, classes, targets, grad_output, |logits, lse, p| {
            let loss = lane_sum([p, logits], |[pi, x]| pi * (lse - x));
            (loss, move |g: &mut [T]| {
                let mass = lane_sum([p], |[pi]| pi);
                for ((gi, &x), &pi) in g.iter_mut().zip(logits).zip(p) {
                    *gi = scale * ((x - lse).fast_exp() * mass - pi);
                }
            })
        });
        Ok(total * scale)
    }

    fn correct(&self, output: &[T], target: &[T], layout: OutputLayout) -> Option<(usize, usize)> {
        let classes = layout.width;
        let right = output
            .chunks_exact(classes)
            .zip(target.chunks_exact(classes))
            .filter(|(row, p)| crate::data::argmax(row) == crate::data::argmax(p))
            .count();
        Some((right, output.len() / classes))
    }
}

/// L1 and L2 penalties on a model's weights (not its biases), added to the loss:
/// `l1 Σ|w| + l2 Σw²`, as Keras' `l1_l2` regulariser defines them.
///
/// This is a term of the objective, reported in the loss value; decoupled weight decay
/// is an optimiser setting instead ([`AdamW`](crate::optim::AdamW)).
///
/// ```
/// use kiln_runtime::Regularization;
/// let both = Regularization { l1: 1e-4, l2: 1e-3 };
/// assert!(both.is_active() && !Regularization::NONE.is_active());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Regularization {
    /// Coefficient of `Σ|w|`.
    pub l1: f64,
    /// Coefficient of `Σw²`.
    pub l2: f64,
}

impl Regularization {
    /// No penalty.
    ///
    /// ```
    /// use kiln_runtime::Regularization;
    /// assert_eq!(Regularization::NONE, Regularization::default());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub const NONE: Self = Self { l1: 0.0, l2: 0.0 };

    /// `l1 Σ|w|`.
    ///
    /// ```
    /// use kiln_runtime::Regularization;
    /// let mut grads = [0.0_f64; 2];
    /// assert_eq!(Regularization::l1(0.5).apply(&[2.0, -4.0], &mut grads), 3.0);
    /// assert_eq!(grads, [0.5, -0.5]);
    /// ```
    pub fn l1(l1: f64) -> Self {
        Self { l1, l2: 0.0 }
    }

    /// `l2 Σw²`.
    ///
    /// ```
    /// use kiln_runtime::Regularization;
    /// let mut grads = [0.0_f64; 2];
    /// assert_eq!(Regularization::l2(0.5).apply(&[2.0, -4.0], &mut grads), 10.0);
    /// assert_eq!(grads, [2.0, -4.0]); // 2·0.5·w
    /// ```
    pub fn l2(l2: f64) -> Self {
        Self { l1: 0.0, l2 }
    }

    /// Whether any penalty is set.
    ///
    /// ```
    /// use kiln_runtime::Regularization;
    /// assert!(!Regularization::default().is_active() && Regularization::l2(1e-4).is_active());
    /// ```
    pub fn is_active(&self) -> bool {
        self.l1 != 0.0 || self.l2 != 0.0
    }

    /// Adds the penalty's gradient to `grads` and returns the penalty, for one buffer of
    /// weights.
    ///
    /// # Panics
    /// If the lengths differ.
    ///
    /// ```
    /// use kiln_runtime::Regularization;
    /// let mut grads = [1.0_f64, 1.0]; // the loss's own gradient, added to
    /// let penalty = Regularization { l1: 0.1, l2: 0.1 }.apply(&[1.0, -1.0], &mut grads);
    /// assert!((penalty - 0.4).abs() < 1e-15);
    /// assert!((grads[0] - 1.3).abs() < 1e-15 && (grads[1] - 0.7).abs() < 1e-15);
    /// ```
    pub fn apply<T: Float>(&self, weights: &[T], grads: &mut [T]) -> T {
        assert_eq!(weights.len(), grads.len());
        let (l1, l2) = (T::from_f64(self.l1), T::from_f64(self.l2));
        let two_l2 = l2 + l2;
        let mut penalty = T::ZERO;
        for (g, &w) in grads.iter_mut().zip(weights) {
            penalty += l1 * w.abs() + l2 * w * w;
            *g += l1 * w.signum0() + two_l2 * w;
        }
        penalty
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testing::*;

    fn check_gradient<L: Loss<f64>>(
        loss: &L,
        output: &[f64],
        target: &L::Target,
        layout: OutputLayout,
    ) {
        let mut grad = vec![0.0; output.len()];
        let value = loss
            .evaluate(output, target, layout, Some(&mut grad))
            .unwrap();
        assert_eq!(value, loss.evaluate(output, target, layout, None).unwrap());
        let numeric = numeric_grad(output, 1e-6, |y| {
            loss.evaluate(y, target, layout, None).unwrap()
        });
        assert_close(&grad, &numeric, 1e-8);
    }

    /// The f32 path (lanes and `fast_exp`) against the f64 one (exact `exp`) on rows
    /// wide enough for whole blocks of lanes and a tail, logits far apart included, for
    /// class labels and for soft targets; a NaN logit gives a NaN loss (and, with
    /// labels, a NaN row of gradient).
    #[test]
    fn f32_cross_entropy_in_lanes_follows_f64() {
        // The f32 loss within 4e-7 of the f64 one, each gradient within 1e-6 (5e-8
        // absolute near zero).
        let follows = |value32: f32, value64: f64, grad32: &[f32], grad64: &[f64]| {
            assert!((f64::from(value32) - value64).abs() <= 4e-7 * value64.abs());
            for (g32, g64) in grad32.iter().zip(grad64) {
                assert!((f64::from(*g32) - g64).abs() <= 5e-8 + 1e-6 * g64.abs());
            }
        };
        let layout = OutputLayout {
            batch: 3,
            width: 97,
        };
        let mut logits: Vec<f64> = values(3 * 97, 5).iter().map(|v| v * 8.0).collect();
        logits[100] = 60.0;
        logits[101] = -60.0;
        // The reference takes the same (f32) values, so only the arithmetic differs.
        let logits32 = narrow(&logits);
        let logits: Vec<f64> = logits32.iter().map(|&v| f64::from(v)).collect();
        let target = [3, 96, 50];
        let loss = CrossEntropy::default();
        let mut grad64 = vec![0.0; logits.len()];
        let value64 = loss
            .evaluate(&logits, &target[..], layout, Some(&mut grad64))
            .unwrap();
        let mut grad32 = vec![0.0f32; logits.len()];
        let value32 = loss
            .evaluate(&logits32, &target[..], layout, Some(&mut grad32))
            .unwrap();
        follows(value32, value64, &grad32, &grad64);
        let mut bad = logits32.clone();
        bad[100] = f32::NAN;
        let value = loss
            .evaluate(&bad, &target[..], layout, Some(&mut grad32))
            .unwrap();
        assert!(value.is_nan());
        assert!(grad32[97..194].iter().all(|g| g.is_nan()));
        assert!(grad32[..97].iter().all(|g| g.is_finite()));

        // The same for soft targets.
        let raw = values(3 * 97, 6);
        let probs32: Vec<f32> = narrow(
            &raw.chunks_exact(97)
                .flat_map(|row| {
                    let total: f64 = row.iter().map(|v| v + 1.0).sum();
                    row.iter().map(move |v| (v + 1.0) / total)
                })
                .collect::<Vec<_>>(),
        );
        let probs: Vec<f64> = probs32.iter().map(|&v| f64::from(v)).collect();
        let loss = CategoricalCrossEntropy::default();
        let value64 = loss
            .evaluate(&logits, &probs[..], layout, Some(&mut grad64))
            .unwrap();
        let value32 = loss
            .evaluate(&logits32, &probs32[..], layout, Some(&mut grad32))
            .unwrap();
        follows(value32, value64, &grad32, &grad64);
        let value = loss.evaluate(&bad, &probs32[..], layout, None).unwrap();
        assert!(value.is_nan());
    }

    #[test]
    fn gradients_match_finite_differences() {
        let layout = OutputLayout { batch: 3, width: 4 };
        let logits: Vec<f64> = values(12, 1).iter().map(|v| v * 5.0).collect();
        let probs: Vec<f64> = values(12, 2).iter().map(|v| 0.5 + 0.45 * v).collect();
        let targets: Vec<f64> = values(12, 3).iter().map(|v| (v + 1.0) / 2.0).collect();
        for reduction in [Reduction::Mean, Reduction::Sum] {
            check_gradient(&Mse { reduction }, &logits, &targets, layout);
            check_gradient(&BinaryCrossEntropy { reduction }, &probs, &targets, layout);
            check_gradient(&BceWithLogits { reduction }, &logits, &targets, layout);
            check_gradient(&CrossEntropy { reduction }, &logits, &[3, 0, 2][..], layout);
            // Sequence outputs: one label per step.
            let steps = OutputLayout { batch: 1, width: 4 };
            check_gradient(&CrossEntropy { reduction }, &logits, &[1, 1, 3][..], steps);
            // Soft targets, and rows whose mass is not 1 (the general gradient).
            check_gradient(
                &CategoricalCrossEntropy { reduction },
                &logits,
                &targets,
                layout,
            );
            let mut soft = targets.clone();
            for row in soft.chunks_exact_mut(4) {
                let mass: f64 = row.iter().sum();
                row.iter_mut().for_each(|p| *p /= mass);
            }
            check_gradient(
                &CategoricalCrossEntropy { reduction },
                &logits,
                &soft,
                layout,
            );
        }
    }

    #[test]
    fn categorical_cross_entropy_on_one_hot_rows_is_cross_entropy() {
        let layout = OutputLayout { batch: 3, width: 4 };
        let logits: Vec<f64> = values(12, 4).iter().map(|v| v * 3.0).collect();
        let labels = [2, 0, 3];
        let mut one_hot = vec![0.0; 12];
        for (row, &l) in one_hot.chunks_exact_mut(4).zip(&labels) {
            row[l] = 1.0;
        }
        for reduction in [Reduction::Mean, Reduction::Sum] {
            let (mut g1, mut g2) = (vec![0.0; 12], vec![0.0; 12]);
            let a = CrossEntropy { reduction }
                .evaluate(&logits, &labels[..], layout, Some(&mut g1))
                .unwrap();
            let b = CategoricalCrossEntropy { reduction }
                .evaluate(&logits, &one_hot, layout, Some(&mut g2))
                .unwrap();
            assert!((a - b).abs() < 1e-14, "{a} vs {b}");
            assert_close(&g1, &g2, 1e-15);
        }
        // Accuracy: the output's argmax against the target's.
        let right = labels
            .iter()
            .zip(logits.chunks_exact(4))
            .filter(|(&l, row)| crate::data::argmax(row) == l)
            .count();
        assert_eq!(
            CategoricalCrossEntropy::default().correct(&logits, &one_hot, layout),
            Some((right, 3))
        );
        assert!(matches!(
            CategoricalCrossEntropy::default().evaluate(&logits, &one_hot[..11], layout, None),
            Err(Error::TargetLength { .. })
        ));
        let mut bad = one_hot.clone();
        bad[5] = f64::NAN;
        assert!(matches!(
            CategoricalCrossEntropy::default().evaluate(&logits, &bad, layout, None),
            Err(Error::InvalidTarget { index: 5, .. })
        ));
    }

    #[test]
    fn bad_targets_are_errors() {
        let layout = OutputLayout { batch: 2, width: 2 };
        let out = [0.5_f64; 4];
        assert_eq!(
            CrossEntropy::default().evaluate(&out, &[0][..], layout, None),
            Err(Error::TargetLength {
                expected: 2,
                actual: 1
            })
        );
        assert_eq!(
            CrossEntropy::default().evaluate(&out, &[0, 7][..], layout, None),
            Err(Error::LabelOutOfRange {
                label: 7,
                index: 1,
                classes: 2
            })
        );
        assert!(matches!(
            BceWithLogits::default().evaluate(&out, &[0.0, 1.0, 1.5, 0.0][..], layout, None),
            Err(Error::InvalidTarget { index: 2, .. })
        ));
        assert!(Mse::default()
            .evaluate(&out, &[0.0; 3][..], layout, None)
            .is_err());
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let layout = OutputLayout { batch: 1, width: 3 };
        let l: f32 = CrossEntropy::default()
            .evaluate(&[1e30, -1e30, 0.0], &[1][..], layout, None)
            .unwrap();
        assert!(l.is_finite() && l > 1e29);
        let l: f32 = BceWithLogits::default()
            .evaluate(
                &[-1e4],
                &[1.0][..],
                OutputLayout { batch: 1, width: 1 },
                None,
            )
            .unwrap();
        assert_eq!(l, 1e4);
    }

    #[test]
    fn regularization_gradient_matches_finite_differences() {
        let w: Vec<f64> = values(17, 9)
            .iter()
            .map(|v| v + if *v > 0.0 { 0.1 } else { -0.1 })
            .collect();
        let reg = Regularization { l1: 0.3, l2: 0.7 };
        let mut g = vec![0.0; 17];
        reg.apply(&w, &mut g);
        let numeric = numeric_grad(&w, 1e-6, |w| reg.apply(w, &mut vec![0.0; w.len()]));
        assert_close(&g, &numeric, 1e-8);
    }
}
