//! Classification metrics: accuracy, the confusion matrix and a per-class report of
//! precision, recall, F1 and support with macro and weighted averages, printed as
//! scikit-learn's `classification_report` prints it.
//!
//! A class with no predictions has precision 0, one with no samples recall 0, and F1 is
//! 0 when both are 0 (scikit-learn's `zero_division=0`). For scores of a binary
//! outcome (a click), [`roc_auc`] ranks them.
//!
//! ```
//! use kiln::metrics::{roc_auc, ConfusionMatrix};
//! let cm = ConfusionMatrix::new(&[0, 1, 1, 2], &[0, 1, 2, 2], 3)?;
//! println!("{}", cm.report_with_names(&["cat", "dog", "bird"]));
//! assert_eq!(cm.accuracy(), 0.75);
//! // Every positive scored above every negative: an AUC of 1.
//! assert_eq!(roc_auc(&[0.9_f32, 0.8, 0.3, 0.1], &[true, true, false, false])?, 1.0);
//! # Ok::<(), kiln::Error>(())
//! ```

use core::fmt;

use crate::{Error, Float, Result};

/// The area under the ROC curve of `scores` for binary `labels` (`true` for a positive):
/// the probability that a positive drawn at random scores above a negative drawn at
/// random, a tie counting one half (scikit-learn's `roc_auc_score`). Scores may be
/// logits or probabilities: only their order counts.
///
/// ```
/// use kiln_runtime::metrics::roc_auc;
/// let auc = roc_auc(&[0.1_f32, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
/// assert_eq!(auc, 0.75);
/// assert!(roc_auc(&[0.5_f32], &[true]).is_err()); // no negative
/// ```
///
/// # Errors
/// [`Error::Mismatch`] if the lengths differ, if there is no positive or no negative,
/// or if a score is NaN.
pub fn roc_auc<T: Float>(scores: &[T], labels: &[bool]) -> Result<f64> {
    if scores.len() != labels.len() {
        return Err(Error::Mismatch(format!(
            "{} scores for {} labels",
            scores.len(),
            labels.len()
        )));
    }
    if let Some(i) = scores.iter().position(|s| s.to_f64().is_nan()) {
        return Err(Error::Mismatch(format!("score {i} is NaN")));
    }
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(Error::Mismatch(
            "the area under the ROC curve needs positives and negatives".into(),
        ));
    }
    // Mann-Whitney: the ranks of the positives among all scores, ties at their mean.
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].to_f64().total_cmp(&scores[b].to_f64()));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i + 1 ..= j + 1, each worth their mean.
        let rank = (i + j + 2) as f64 / 2.0;
        rank_sum += rank * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Ok((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Counts of (true class, predicted class) pairs.
///
/// ```
/// use kiln_runtime::metrics::ConfusionMatrix;
/// let (predicted, labels) = ([0, 2, 1, 2], [0, 2, 2, 2]);
/// let cm = ConfusionMatrix::new(&predicted, &labels, 3).unwrap();
/// assert_eq!((cm.classes(), cm.total()), (3, 4));
/// assert_eq!(cm.count(2, 1), 1); // one 2 taken for a 1
/// assert!(ConfusionMatrix::new(&[3], &[0], 3).is_err()); // no class 3
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// Tallies `predictions` against `labels`; both must be below `classes` and of one
    /// length.
    ///
    /// ```
    /// use kiln_runtime::metrics::ConfusionMatrix;
    /// let cm = ConfusionMatrix::new(&[0, 1, 1], &[0, 1, 0], 2).unwrap();
    /// assert_eq!(cm.count(0, 1), 1); // one true 0 predicted as 1
    /// assert!((cm.accuracy() - 2.0 / 3.0).abs() < 1e-12);
    /// ```
    pub fn new(predictions: &[usize], labels: &[usize], classes: usize) -> Result<Self> {
        if predictions.len() != labels.len() {
            return Err(Error::TargetLength {
                expected: predictions.len(),
                actual: labels.len(),
            });
        }
        let mut counts = classes
            .checked_mul(classes)
            .and_then(zeroed)
            .ok_or_else(|| {
                Error::Mismatch(format!(
                    "{classes} classes are too many for a confusion matrix"
                ))
            })?;
        for (index, (&p, &t)) in predictions.iter().zip(labels).enumerate() {
            for label in [p, t] {
                if label >= classes {
                    return Err(Error::LabelOutOfRange {
                        label,
                        index,
                        classes,
                    });
                }
            }
            counts[t * classes + p] += 1;
        }
        Ok(Self { classes, counts })
    }

    /// Number of classes.
    ///
    /// ```
    /// use kiln_runtime::metrics::ConfusionMatrix;
    /// assert_eq!(ConfusionMatrix::new(&[], &[], 10).unwrap().classes(), 10);
    /// ```
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Samples of class `actual` predicted as `predicted`.
    ///
    /// ```
    /// use kiln_runtime::metrics::ConfusionMatrix;
    /// let cm = ConfusionMatrix::new(&[1, 1, 0], &[0, 1, 0], 2).unwrap();
    /// assert_eq!((cm.count(0, 0), cm.count(0, 1), cm.count(1, 1)), (1, 1, 1));
    /// ```
    pub fn count(&self, actual: usize, predicted: usize) -> u64 {
        self.counts[actual * self.classes + predicted]
    }

    /// Samples in all.
    ///
    /// ```
    /// use kiln_runtime::metrics::ConfusionMatrix;
    /// assert_eq!(ConfusionMatrix::new(&[1, 1, 0], &[0, 1, 0], 2).unwrap().total(), 3);
    /// ```
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Fraction predicted correctly.
    ///
    /// ```
    /// use kiln_runtime::metrics::ConfusionMatrix;
    /// let cm = ConfusionMatrix::new(&[1, 1, 0, 0], &[0, 1, 0, 0], 2).unwrap();
    /// assert_eq!(cm.accuracy(), 0.75);
    /// ```
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.classes).map(|c| self.count(c, c)).sum();
        correct as f64 / self.total().max(1) as f64
    }

    /// The per-class report.
    ///
    /// ```
    /// use kiln_runtime::metrics::ConfusionMatrix;
    /// let report = ConfusionMatrix::new(&[1, 1, 0, 0], &[0, 1, 0, 0], 2).unwrap().report();
    /// assert_eq!(report.names, ["0", "1"]);
    /// assert_eq!(report.classes[1].precision, 0.5); // one of the two 1s was right
    /// assert_eq!(report.classes[1].recall, 1.0);
    /// assert_eq!(report.classes[0].support, 3);
    /// ```
    pub fn report(&self) -> ClassificationReport {
        ClassificationReport::new(self, None)
    }

    /// The per-class report, rows labelled with `names`.
    ///
    /// ```
    /// use kiln_runtime::metrics::ConfusionMatrix;
    /// let cm = ConfusionMatrix::new(&[1, 1, 0, 0], &[0, 1, 0, 0], 2).unwrap();
    /// let report = cm.report_with_names(&["cat", "dog"]);
    /// assert!(report.to_string().contains("dog"));
    /// ```
    pub fn report_with_names(&self, names: &[&str]) -> ClassificationReport {
        ClassificationReport::new(self, Some(names))
    }
}

/// Precision, recall, F1 and support of one class (or an average).
///
/// ```
/// use kiln_runtime::metrics::ConfusionMatrix;
/// let report = ConfusionMatrix::new(&[1, 1, 0, 0], &[0, 1, 0, 0], 2).unwrap().report();
/// let dog = report.classes[1];
/// assert!((dog.f1 - 2.0 * 0.5 * 1.0 / 1.5).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScores {
    /// Correct among those predicted as the class.
    pub precision: f64,
    /// Correct among those of the class.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Samples of the class.
    pub support: u64,
}

/// Per-class scores with accuracy and macro and weighted averages, printed as
/// scikit-learn's `classification_report` prints them.
///
/// ```
/// use kiln_runtime::metrics::ConfusionMatrix;
/// let report = ConfusionMatrix::new(&[1, 1, 0, 0], &[0, 1, 0, 0], 2).unwrap().report();
/// assert_eq!(report.accuracy, 0.75);
/// assert_eq!(report.macro_avg.recall, (2.0 / 3.0 + 1.0) / 2.0);
/// assert_eq!(report.weighted_avg.support, 4);
/// println!("{report}");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationReport {
    /// Row labels.
    pub names: Vec<String>,
    /// Scores per class.
    pub classes: Vec<ClassScores>,
    /// Overall accuracy.
    pub accuracy: f64,
    /// Unweighted mean over classes.
    pub macro_avg: ClassScores,
    /// Mean over classes weighted by support.
    pub weighted_avg: ClassScores,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl ClassificationReport {
    fn new(cm: &ConfusionMatrix, names: Option<&[&str]>) -> Self {
        let k = cm.classes;
        let classes: Vec<ClassScores> = (0..k)
            .map(|c| {
                let tp = cm.count(c, c);
                let predicted: u64 = (0..k).map(|a| cm.count(a, c)).sum();
                let support: u64 = (0..k).map(|p| cm.count(c, p)).sum();
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassScores {
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        let total = cm.total();
        let average = |weight: &dyn Fn(&ClassScores) -> f64| {
            let norm: f64 = classes.iter().map(weight).sum();
            let mean = |f: &dyn Fn(&ClassScores) -> f64| {
                if norm == 0.0 {
                    0.0
                } else {
                    classes.iter().map(|s| weight(s) * f(s)).sum::<f64>() / norm
                }
            };
            ClassScores {
                precision: mean(&|s| s.precision),
                recall: mean(&|s| s.recall),
                f1: mean(&|s| s.f1),
                support: total,
            }
        };
        let names = (0..k)
            .map(|c| {
                names
                    .and_then(|n| n.get(c))
                    .map_or_else(|| c.to_string(), |n| n.to_string())
            })
            .collect();
        Self {
            names,
            macro_avg: average(&|_| 1.0),
            weighted_avg: average(&|s| s.support as f64),
            accuracy: cm.accuracy(),
            classes,
        }
    }
}

impl fmt::Display for ClassificationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .names
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max("weighted avg".len());
        writeln!(
            f,
            "{:>width$} {:>9} {:>9} {:>9} {:>9}",
            "", "precision", "recall", "f1-score", "support"
        )?;
        writeln!(f)?;
        for (name, s) in self.names.iter().zip(&self.classes) {
            writeln!(
                f,
                "{name:>width$} {:>9.4} {:>9.4} {:>9.4} {:>9}",
                s.precision, s.recall, s.f1, s.support
            )?;
        }
        writeln!(f)?;
        let total = self.macro_avg.support;
        writeln!(
            f,
            "{:>width$} {:>9} {:>9} {:>9.4} {:>9}",
            "accuracy", "", "", self.accuracy, total
        )?;
        for (name, s) in [
            ("macro avg", &self.macro_avg),
            ("weighted avg", &self.weighted_avg),
        ] {
            writeln!(
                f,
                "{name:>width$} {:>9.4} {:>9.4} {:>9.4} {:>9}",
                s.precision, s.recall, s.f1, s.support
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_matches_scikit_learn() {
        // sklearn.metrics.classification_report(y_true, y_pred, digits=4) for:
        let y_true = [0, 1, 2, 2, 2, 1, 0, 0, 1, 2];
        let y_pred = [0, 2, 2, 2, 1, 1, 0, 1, 1, 2];
        let cm = ConfusionMatrix::new(&y_pred, &y_true, 3).unwrap();
        let r = cm.report();
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        // class 0: precision 2/2, recall 2/3; class 1: 2/4, 2/3; class 2: 3/4, 3/4
        close(r.classes[0].precision, 1.0);
        close(r.classes[0].recall, 0.6667);
        close(r.classes[0].f1, 0.8);
        close(r.classes[1].precision, 0.5);
        close(r.classes[1].f1, 0.5714);
        close(r.classes[2].f1, 0.75);
        close(r.accuracy, 0.7);
        close(r.macro_avg.precision, 0.75);
        close(r.macro_avg.f1, (0.8 + 4.0 / 7.0 + 0.75) / 3.0);
        close(r.weighted_avg.f1, 0.7114);
        assert_eq!(r.weighted_avg.support, 10);
        let text = r.to_string();
        assert!(text.contains("weighted avg"));
        assert!(text.contains("accuracy"));
    }

    #[test]
    fn empty_classes_score_zero_and_bad_labels_are_errors() {
        let cm = ConfusionMatrix::new(&[0, 0], &[0, 0], 3).unwrap();
        let r = cm.report();
        assert_eq!(r.classes[1].precision, 0.0);
        assert_eq!(r.classes[1].f1, 0.0);
        assert!(ConfusionMatrix::new(&[0, 3], &[0, 0], 3).is_err());
        assert!(ConfusionMatrix::new(&[0], &[0, 0], 3).is_err());
    }
}

/// A classification metric [`fit`](crate::train::fit) can compute each epoch, on the
/// training batches as they are trained and on the validation data (accuracy is
/// always computed for class labels).
///
/// ```
/// # use kiln::prelude::*;
/// use kiln::metrics::Metric;
/// kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// let config = FitConfig::new(2, 16).progress(Progress::Silent).metrics(&[Metric::TopK(2), Metric::F1Macro]);
/// let history = Net::<f32>::new(0).fit(&data, None, &CrossEntropy::default(), &mut Adam::new(1e-2), &config)?;
/// assert!(history.epochs[1].top_k.unwrap() >= history.epochs[1].accuracy.unwrap());
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Share of samples whose label is among the `k` highest outputs (a label tied
    /// with the `k`-th counts).
    TopK(usize),
    /// The mean over classes of F1 (`2·TP / (2·TP + FP + FN)`), over the classes that
    /// occur among the labels or the predictions (scikit-learn's
    /// `f1_score(average="macro")`).
    F1Macro,
}

/// Running counts for [`Metric`]s over batches of outputs and labels, made once and
/// reused: no copy of the predictions, no allocation per batch.
///
/// ```
/// use kiln_runtime::metrics::{Metric, MetricCounts};
/// let mut counts = MetricCounts::new(&[Metric::TopK(2), Metric::F1Macro], 3)?;
/// // Two samples: the first's label (0) is its second-highest output, the second's (2) its highest.
/// counts.add(&[0.5_f32, 0.9, 0.1, 0.2, 0.3, 0.7], &[0, 2], 3);
/// assert_eq!(counts.top_k(), Some(1.0)); // both labels are in their sample's top 2
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MetricCounts {
    top_k: Option<usize>,
    hits: u64,
    samples: u64,
    /// Per class `[true positives, false positives, false negatives]`, if F1 is asked.
    per_class: Option<Vec<[u64; 3]>>,
}

impl MetricCounts {
    /// Counts for `metrics` over outputs of `classes` values per sample. Fails on a
    /// `TopK` of 0 or above the number of classes.
    ///
    /// ```
    /// use kiln_runtime::metrics::{Metric, MetricCounts};
    /// assert!(MetricCounts::new(&[Metric::TopK(3)], 10).is_ok());
    /// assert!(MetricCounts::new(&[Metric::TopK(0)], 10).is_err());
    /// assert!(MetricCounts::new(&[Metric::TopK(11)], 10).is_err());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn new(metrics: &[Metric], classes: usize) -> Result<Self> {
        let mut counts = Self {
            top_k: None,
            hits: 0,
            samples: 0,
            per_class: None,
        };
        for &metric in metrics {
            match metric {
                Metric::TopK(k) if k == 0 || k > classes => {
                    return Err(Error::InvalidHyperParameter {
                        name: "top-k",
                        value: k as f64,
                        reason: "must be between 1 and the number of classes",
                    })
                }
                Metric::TopK(k) => counts.top_k = Some(k),
                Metric::F1Macro => {
                    let per_class = zeroed(classes).ok_or(Error::InvalidHyperParameter {
                        name: "classes",
                        value: classes as f64,
                        reason: "too many to keep counts for each",
                    })?;
                    counts.per_class = Some(per_class);
                }
            }
        }
        Ok(counts)
    }

    /// Starts over.
    ///
    /// ```
    /// use kiln_runtime::metrics::{Metric, MetricCounts};
    /// let mut counts = MetricCounts::new(&[Metric::TopK(2), Metric::F1Macro], 3)?;
    /// counts.add(&[0.5_f32, 0.9, 0.1], &[0], 3);
    /// counts.reset();
    /// assert_eq!(counts.top_k(), None); // nothing counted
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn reset(&mut self) {
        (self.hits, self.samples) = (0, 0);
        if let Some(per_class) = &mut self.per_class {
            per_class.fill([0; 3]);
        }
    }

    /// Adds a batch: `outputs` in rows of `width` (one per label). Labels at or above
    /// `width` are not counted (the loss reports them).
    ///
    /// ```
    /// use kiln_runtime::metrics::{Metric, MetricCounts};
    /// let mut counts = MetricCounts::new(&[Metric::TopK(2), Metric::F1Macro], 3)?;
    /// counts.add(&[0.1_f32, 0.2, 0.7], &[0], 3); // the label is the lowest output
    /// counts.add(&[0.1_f32, 0.2, 0.7], &[7], 3); // no class 7: not counted
    /// assert_eq!(counts.top_k(), Some(0.0));
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn add<T: crate::Float>(&mut self, outputs: &[T], labels: &[usize], width: usize) {
        for (row, &label) in outputs.chunks_exact(width).zip(labels) {
            if label >= width {
                continue;
            }
            self.samples += 1;
            if let Some(k) = self.top_k {
                let score = row[label];
                let above = row.iter().filter(|&&v| v > score).count();
                self.hits += u64::from(above < k);
            }
            if let Some(per_class) = &mut self.per_class {
                let predicted = crate::data::argmax(row);
                if predicted == label {
                    per_class[label][0] += 1;
                } else {
                    per_class[predicted][1] += 1;
                    per_class[label][2] += 1;
                }
            }
        }
    }

    /// The counts as one list (hits, samples, then each class's three), for a backup.
    pub(crate) fn to_counts(&self) -> Vec<u64> {
        let mut out = vec![self.hits, self.samples];
        for class in self.per_class.iter().flatten() {
            out.extend_from_slice(class);
        }
        out
    }

    /// Puts back what [`to_counts`](Self::to_counts) gave; `false` if `counts` is not of
    /// this metric set's length (nothing is changed then).
    pub(crate) fn restore_counts(&mut self, counts: &[u64]) -> bool {
        let classes = self.per_class.as_ref().map_or(0, Vec::len);
        if counts.len() != 2 + 3 * classes {
            return false;
        }
        (self.hits, self.samples) = (counts[0], counts[1]);
        for (class, values) in self
            .per_class
            .iter_mut()
            .flatten()
            .zip(counts[2..].chunks(3))
        {
            class.copy_from_slice(values);
        }
        true
    }

    /// The top-k accuracy so far, if asked for and anything was counted.
    ///
    /// ```
    /// use kiln_runtime::metrics::{Metric, MetricCounts};
    /// let mut counts = MetricCounts::new(&[Metric::TopK(2), Metric::F1Macro], 3)?;
    /// assert_eq!(counts.top_k(), None);
    /// counts.add(&[0.1_f32, 0.5, 0.4, 0.6, 0.3, 0.1], &[2, 1], 3);
    /// assert_eq!(counts.top_k(), Some(1.0));
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn top_k(&self) -> Option<f64> {
        self.top_k
            .filter(|_| self.samples > 0)
            .map(|_| self.hits as f64 / self.samples as f64)
    }

    /// The macro F1 so far, if asked for and anything was counted.
    ///
    /// ```
    /// use kiln_runtime::metrics::{Metric, MetricCounts};
    /// let mut counts = MetricCounts::new(&[Metric::TopK(2), Metric::F1Macro], 3)?;
    /// counts.add(&[0.9_f32, 0.0, 0.0, 0.0, 0.9, 0.0], &[0, 1], 3); // both right
    /// assert_eq!(counts.f1_macro(), Some(1.0)); // over the classes that occur
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn f1_macro(&self) -> Option<f64> {
        let per_class = self.per_class.as_ref().filter(|_| self.samples > 0)?;
        let (mut sum, mut present) = (0.0, 0usize);
        for &[tp, fp, fn_] in per_class {
            if tp + fp + fn_ > 0 {
                sum += 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64;
                present += 1;
            }
        }
        Some(sum / present.max(1) as f64)
    }
}

/// `len` zeroed counts, or `None` if they cannot be held: class counts come from the
/// caller, and an allocation that fails must be an error, not an abort.
fn zeroed<C: Clone + Default>(len: usize) -> Option<Vec<C>> {
    let mut counts = Vec::new();
    counts.try_reserve_exact(len).ok()?;
    counts.resize(len, C::default());
    Some(counts)
}

#[cfg(test)]
mod auc_tests {
    use super::roc_auc;

    /// Against the definition: the share of (positive, negative) pairs ordered right,
    /// ties one half, over every pair.
    #[test]
    fn auc_counts_ordered_pairs_and_halves_ties() {
        let scores = [0.3f64, 0.3, 0.9, 0.1, 0.5, 0.5, 0.7, 0.2, 0.3];
        let labels = [true, false, true, false, true, false, false, true, true];
        let mut pairs = 0.0;
        let mut count = 0.0;
        let of = |positive: bool| {
            scores
                .iter()
                .zip(labels)
                .filter(move |pair| pair.1 == positive)
                .map(|(&s, _)| s)
        };
        for si in of(true) {
            for sj in of(false) {
                count += 1.0;
                pairs += if si > sj {
                    1.0
                } else if si == sj {
                    0.5
                } else {
                    0.0
                };
            }
        }
        assert!((roc_auc(&scores, &labels).unwrap() - pairs / count).abs() < 1e-15);
        assert_eq!(roc_auc(&[1.0f64, 2.0], &[false, true]).unwrap(), 1.0);
        assert_eq!(roc_auc(&[1.0f64, 1.0], &[false, true]).unwrap(), 0.5);
        assert!(roc_auc(&[f64::NAN, 1.0], &[false, true]).is_err());
        assert!(roc_auc(&[1.0f64], &[false, true]).is_err());
    }
}

#[cfg(test)]
mod metric_tests {
    use super::*;

    #[test]
    fn top_k_and_f1_macro_match_hand_counts() {
        // Four samples of three classes.
        let outputs = [
            0.7f32, 0.2, 0.1, // label 0: predicted 0 (top-1 hit)
            0.5, 0.4, 0.1, // label 1: predicted 0, second (top-2 hit)
            0.1, 0.3, 0.6, // label 0: predicted 2, last (miss)
            0.2, 0.2, 0.6, // label 1: tied second (top-2 hit)
        ];
        let labels = [0, 1, 0, 1];
        let mut counts = MetricCounts::new(&[Metric::TopK(2), Metric::F1Macro], 3).unwrap();
        counts.add(&outputs[..6], &labels[..2], 3);
        counts.add(&outputs[6..], &labels[2..], 3);
        assert_eq!(counts.top_k(), Some(0.75));
        // Predictions 0, 0, 2, 2: class 0 TP 1 FP 1 FN 1 -> 0.5; class 1 TP 0 FN 2 -> 0;
        // class 2 FP 2 -> 0. Mean over the three: 1/6. The confusion matrix's report
        // agrees when every class occurs.
        assert!((counts.f1_macro().unwrap() - 1.0 / 6.0).abs() < 1e-12);
        let cm = ConfusionMatrix::new(&[0, 0, 2, 2], &labels, 3).unwrap();
        assert!((cm.report().macro_avg.f1 - 1.0 / 6.0).abs() < 1e-12);
        counts.reset();
        assert_eq!(counts.top_k(), None);
        assert!(MetricCounts::new(&[Metric::TopK(4)], 3).is_err());
        // A class count whose matrix cannot exist is an error, not an abort.
        assert!(ConfusionMatrix::new(&[0], &[0], usize::MAX / 2).is_err());
        // 2^40 cells (8 TiB): the product fits, the allocation cannot.
        assert!(ConfusionMatrix::new(&[0], &[0], 1 << 20).is_err());
        assert!(MetricCounts::new(&[Metric::TopK(0)], 3).is_err());
        // Per-class counts that cannot be held: an error too.
        let err = MetricCounts::new(&[Metric::F1Macro], usize::MAX / 8).unwrap_err();
        assert!(err.to_string().contains("classes"), "{err}");
    }
}
