//! Progress output of `fit`: an `indicatif` bar per epoch on a terminal (with the
//! `progress` feature), one plain line per epoch otherwise.

#[cfg(feature = "progress")]
use indicatif::{ProgressBar, ProgressStyle};

/// Stands in for the bar without the `progress` feature.
#[cfg(not(feature = "progress"))]
struct ProgressBar;

use super::{EpochLog, History};

/// How [`fit`](super::fit) shows progress.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// # let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// # let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// # let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// # let mut net = Net::<f32>::new(0);
/// # let quiet = FitConfig::new(3, 16).progress(Progress::Silent);
/// // Progress::Auto draws a bar on a terminal and prints a line per epoch elsewhere.
/// let config = FitConfig::new(1, 16).progress(Progress::Silent);
/// let history = net.fit(&data, None, &CrossEntropy::default(), &mut Sgd::new(0.1), &config)?; // prints nothing
/// assert_eq!(history.epochs.len(), 1);
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// A bar if standard error is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Always a bar (lines without the `progress` feature).
    Bar,
    /// One line per epoch on standard error.
    Lines,
    /// Nothing.
    Silent,
}

#[cfg_attr(not(feature = "progress"), allow(dead_code))]
pub(super) struct Reporter {
    mode: Progress,
    epochs: usize,
    batches: usize,
    bar: Option<ProgressBar>,
    steps: usize,
}

impl Progress {
    pub(super) fn start(self, epochs: usize, batches: usize) -> Reporter {
        let mode = match self {
            Progress::Auto | Progress::Bar if !cfg!(feature = "progress") => Progress::Lines,
            Progress::Auto if std::io::IsTerminal::is_terminal(&std::io::stderr()) => Progress::Bar,
            Progress::Auto => Progress::Lines,
            other => other,
        };
        Reporter {
            mode,
            epochs,
            batches,
            bar: None,
            steps: 0,
        }
    }
}

fn metrics(log: &EpochLog) -> String {
    let mut text = format!("loss {:.4}", log.loss);
    if let Some(a) = log.accuracy {
        text.push_str(&format!("  accuracy {a:.4}"));
    }
    if let Some(v) = log.val_loss {
        text.push_str(&format!("  val_loss {v:.4}"));
    }
    if let Some(a) = log.val_accuracy {
        text.push_str(&format!("  val_accuracy {a:.4}"));
    }
    for (name, value) in [
        ("top_k", log.top_k),
        ("val_top_k", log.val_top_k),
        ("f1_macro", log.f1_macro),
        ("val_f1_macro", log.val_f1_macro),
    ] {
        if let Some(v) = value {
            text.push_str(&format!("  {name} {v:.4}"));
        }
    }
    if let Some(norm) = log.grad_norm {
        text.push_str(&format!("  grad_norm {norm:.4}"));
    }
    // Each output of a model with several, as Keras writes them.
    for o in &log.outputs {
        text.push_str(&format!("  {}_loss {:.4}", o.name, o.loss));
        if let Some(a) = o.accuracy {
            text.push_str(&format!("  {}_accuracy {a:.4}", o.name));
        }
        if let Some(v) = o.val_loss {
            text.push_str(&format!("  val_{}_loss {v:.4}", o.name));
        }
        if let Some(a) = o.val_accuracy {
            text.push_str(&format!("  val_{}_accuracy {a:.4}", o.name));
        }
    }
    text
}

impl Reporter {
    #[cfg_attr(not(feature = "progress"), allow(unused_variables))]
    pub(super) fn begin_epoch(&mut self, epoch: usize) {
        self.steps = 0;
        #[cfg(feature = "progress")]
        if self.mode == Progress::Bar {
            let bar = ProgressBar::new(self.batches as u64);
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30.cyan/blue}] {pos}/{len} {elapsed_precise} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(format!("epoch {}/{}", epoch + 1, self.epochs));
            self.bar = Some(bar);
        }
    }

    #[cfg_attr(not(feature = "progress"), allow(unused_variables))]
    pub(super) fn step(&mut self, loss: f64, accuracy: Option<f64>) {
        self.steps += 1;
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            // Drawing and formatting cost more than a small step: refresh every 16 steps.
            if self.steps.is_multiple_of(16) || self.steps == self.batches {
                bar.set_position(self.steps as u64);
                match accuracy {
                    Some(a) => bar.set_message(format!("loss {loss:.4}  accuracy {a:.4}")),
                    None => bar.set_message(format!("loss {loss:.4}")),
                }
            }
        }
    }

    pub(super) fn end_epoch(&mut self, log: &EpochLog) {
        let line = format!(
            "epoch {}/{}  {:.3}s  lr {:.3e}  {}",
            log.epoch + 1,
            self.epochs,
            log.seconds,
            log.learning_rate,
            metrics(log)
        );
        match self.mode {
            Progress::Bar => {
                #[cfg(feature = "progress")]
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                eprintln!("{line}");
            }
            Progress::Lines => eprintln!("{line}"),
            Progress::Auto | Progress::Silent => {}
        }
    }

    pub(super) fn finish(&mut self, history: &History) {
        if self.mode == Progress::Silent {
            return;
        }
        if history.stopped_early {
            let best = history
                .best_epoch
                .map_or_else(|| "-".to_string(), |e| (e + 1).to_string());
            eprintln!(
                "early stopping after epoch {}; best epoch {best}",
                history.epochs.len()
            );
        }
    }
}
