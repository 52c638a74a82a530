//! `fit`'s callbacks and bookkeeping: history, validation, early stopping that restores
//! the best weights, checkpoints of the best model, learning-rate schedules, and
//! errors instead of silent misconfiguration.

use kiln::data::Dataset;
use kiln::prelude::*;
use kiln::train::predict;

kiln::model! {
    struct Classifier { input: [4], hidden: Dense(16), Tanh, out: Dense(3) }
}
kiln::model! {
    struct Regressor { input: [2], out: Dense(1) }
}

/// Three separable classes by the sign pattern of the first two features.
fn blobs(n: usize, seed: u64) -> Dataset<f32, Shape1<4>> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut unit = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let class = i % 3;
        let centre = [[1.0, 1.0], [-1.0, 1.0], [0.0, -1.0]][class];
        x.extend([
            centre[0] + 0.6 * unit(),
            centre[1] + 0.6 * unit(),
            unit(),
            unit(),
        ]);
        y.push(class);
    }
    Dataset::new(x, y, Some(3)).unwrap()
}

#[test]
fn history_records_every_epoch_with_validation() {
    let data = blobs(300, 1);
    let mut net = Classifier::<f32>::new(0);
    let config = FitConfig::new(6, 16)
        .validation_split(0.2)
        .progress(Progress::Silent);
    let history = net
        .fit(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Adam::new(1e-2),
            &config,
        )
        .unwrap();
    assert_eq!(history.epochs.len(), 6);
    assert!(!history.stopped_early);
    let first = &history.epochs[0];
    let last = &history.epochs[5];
    assert!(last.loss < first.loss);
    assert!(last.val_loss.unwrap() < first.val_loss.unwrap());
    assert!(last.val_accuracy.unwrap() > 0.95, "{last:?}");
    let eval = net.evaluate(&data, &CrossEntropy::default(), 64).unwrap();
    assert_eq!(eval.samples, 300);
    assert!(eval.accuracy.unwrap() > 0.95);
}

/// One-hot targets train as labels do: the same losses and accuracies, epoch by epoch,
/// with `CategoricalCrossEntropy` as with `CrossEntropy` (one output: accuracy comes
/// from the loss's own count, not the target type's).
#[test]
fn one_hot_targets_train_and_score_as_labels_do() {
    let labels = blobs(300, 1);
    let one_hot: Vec<f32> = labels
        .targets()
        .iter()
        .flat_map(|&c| (0..3).map(move |k| if k == c { 1.0 } else { 0.0 }))
        .collect();
    let values = Dataset::new(labels.features().as_slice().to_vec(), one_hot, None).unwrap();
    let config = FitConfig::new(4, 16)
        .validation_split(0.2)
        .seed(3)
        .progress(Progress::Silent);
    let by_label = Classifier::<f64>::new(0)
        .fit(
            &blobs_f64(&labels),
            None,
            &CrossEntropy::default(),
            &mut Adam::new(1e-2),
            &config,
        )
        .unwrap();
    let by_value = Classifier::<f64>::new(0)
        .fit(
            &values_f64(&values),
            None,
            &CategoricalCrossEntropy::default(),
            &mut Adam::new(1e-2),
            &config,
        )
        .unwrap();
    for (a, b) in by_label.epochs.iter().zip(&by_value.epochs) {
        assert!((a.loss - b.loss).abs() < 1e-12, "{a:?} {b:?}");
        assert!((a.val_loss.unwrap() - b.val_loss.unwrap()).abs() < 1e-12);
        assert_eq!(a.accuracy, b.accuracy);
        assert_eq!(a.val_accuracy, b.val_accuracy);
        assert!(b.accuracy.is_some());
    }
}

fn blobs_f64(data: &Dataset<f32, Shape1<4>>) -> Dataset<f64, Shape1<4>> {
    let x = data
        .features()
        .as_slice()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    Dataset::new(x, data.targets().to_vec(), Some(3)).unwrap()
}

fn values_f64(data: &Dataset<f32, Shape1<4>, f32>) -> Dataset<f64, Shape1<4>, f64> {
    let x = data
        .features()
        .as_slice()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let y = data.targets().iter().map(|&v| f64::from(v)).collect();
    Dataset::new(x, y, None).unwrap()
}

#[test]
fn fit_clips_and_logs_the_mean_gradient_norm_of_each_epoch() {
    let data = blobs(120, 3);
    let config = FitConfig::new(3, 16).progress(Progress::Silent);
    let mut plain = Classifier::<f32>::new(0);
    let history = plain
        .fit(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Sgd::new(0.5),
            &config,
        )
        .unwrap();
    assert!(history.epochs.iter().all(|e| e.grad_norm.is_none()));

    let mut clipped = Classifier::<f32>::new(0);
    clipped.set_grad_clip(Some(GradClip::Norm(0.01))).unwrap();
    let history = clipped
        .fit(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Sgd::new(0.5),
            &config,
        )
        .unwrap();
    for epoch in &history.epochs {
        let norm = epoch.grad_norm.expect("a norm with clipping in force");
        assert!(norm > 0.01, "{epoch:?}");
    }
    // Steps of at most 0.5 · 0.01 in norm: the parameters moved far less.
    let start = Classifier::<f32>::new(0);
    let moved = |net: &Classifier<f32>| {
        let (a, b) = (net.params().as_slice(), start.params().as_slice());
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            .sqrt()
    };
    let batches = 3.0 * (120.0f32 / 16.0).ceil();
    assert!(
        moved(&clipped) <= 0.5 * 0.01 * batches * 1.001,
        "{}",
        moved(&clipped)
    );
    assert!(moved(&plain) > 10.0 * moved(&clipped));
}

#[test]
fn early_stopping_stops_and_restores_the_best_weights() {
    // Validation labels that disagree with the training labels: the better the model
    // fits the training set, the worse the validation loss, so patience runs out.
    let train = blobs(300, 2);
    let wrong = blobs(90, 3);
    let rotated: Vec<usize> = wrong.targets().iter().map(|y| (y + 1) % 3).collect();
    let valid = Dataset::new(wrong.features().as_slice().to_vec(), rotated, Some(3)).unwrap();
    let mut net = Classifier::<f32>::new(1);
    let config = FitConfig::new(50, 8)
        .early_stopping(EarlyStopping::new(Monitor::ValLoss, 2))
        .progress(Progress::Silent);
    let history = net
        .fit(
            &train,
            Some(&valid),
            &CrossEntropy::default(),
            &mut Adam::new(1e-2),
            &config,
        )
        .unwrap();
    assert!(history.stopped_early, "{} epochs", history.epochs.len());
    let best = history.best_epoch.unwrap();
    assert_eq!(
        history.epochs.len(),
        best + 1 + 2,
        "stops after patience (2) epochs without improvement, as Keras"
    );
    let best_val = history.epochs[best].val_loss.unwrap();
    for log in &history.epochs {
        assert!(log.val_loss.unwrap() >= best_val);
    }
    let now = net
        .evaluate(&valid, &CrossEntropy::default(), 64)
        .unwrap()
        .loss;
    assert!(
        (now - best_val).abs() < 1e-5,
        "restored weights give the best val_loss: {now} vs {best_val}"
    );
}

kiln::model! {
    struct Normalised { input: [4], hidden: Dense(16), bn: BatchNorm1d, Tanh, out: Dense(3) }
}

#[test]
fn restoring_the_best_weights_restores_their_running_statistics() {
    // The checkpoint and early stopping watch the same quantity, so the checkpoint is
    // the best epoch's model, running statistics included.
    let train = blobs(300, 2);
    let wrong = blobs(90, 3);
    let rotated: Vec<usize> = wrong.targets().iter().map(|y| (y + 1) % 3).collect();
    let valid = Dataset::new(wrong.features().as_slice().to_vec(), rotated, Some(3)).unwrap();
    let dir = std::env::temp_dir().join(format!("kiln-fit-bn-{}", std::process::id()));
    let path = dir.join("best.safetensors");
    let mut net = Normalised::<f32>::new(1);
    let config = FitConfig::new(50, 8)
        .early_stopping(EarlyStopping::new(Monitor::ValLoss, 2))
        .checkpoint(&path, Monitor::ValLoss)
        .progress(Progress::Silent);
    let history = net
        .fit(
            &train,
            Some(&valid),
            &CrossEntropy::default(),
            &mut Adam::new(0.05),
            &config,
        )
        .unwrap();
    assert!(history.stopped_early);
    let best = history.best_epoch.unwrap();
    assert!(best + 1 < history.epochs.len());
    let mut saved = Normalised::<f32>::new(9);
    saved.load(&path).unwrap();
    assert_eq!(net.params().as_slice(), saved.params().as_slice());
    assert_eq!(net.buffers().as_slice(), saved.buffers().as_slice());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checkpoint_keeps_the_best_model() {
    let dir = std::env::temp_dir().join(format!("kiln-fit-{}", std::process::id()));
    // fit makes the checkpoint's directory.
    let path = dir.join("run").join("best.safetensors");
    let data = blobs(150, 4);
    let mut net = Classifier::<f32>::new(2);
    let config = FitConfig::new(5, 16)
        .validation_split(0.2)
        .checkpoint(&path, Monitor::ValAccuracy)
        .progress(Progress::Silent);
    let history = net
        .fit(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Adam::new(1e-2),
            &config,
        )
        .unwrap();
    let best = history.best_epoch.unwrap();
    let best_accuracy = history
        .epochs
        .iter()
        .map(|e| e.val_accuracy.unwrap())
        .fold(0.0, f64::max);
    assert_eq!(history.epochs[best].val_accuracy.unwrap(), best_accuracy);
    let mut restored = Classifier::<f32>::new(9);
    restored.load(&path).unwrap();
    let (_, valid) = data.split(0.2, 0);
    let accuracy = restored
        .evaluate(&valid, &CrossEntropy::default(), 64)
        .unwrap()
        .accuracy
        .unwrap();
    assert_eq!(accuracy, best_accuracy);

    // A directory that cannot be made (a file is in the way) fails before training.
    let blocked = dir.join("file");
    std::fs::write(&blocked, b"").unwrap();
    let before = net.params().as_slice().to_vec();
    let config = config.checkpoint(blocked.join("best.safetensors"), Monitor::ValAccuracy);
    let error = net
        .fit(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Adam::new(1e-2),
            &config,
        )
        .unwrap_err();
    assert!(matches!(error, kiln::Error::Io { .. }), "{error}");
    assert_eq!(net.params().as_slice(), &before[..]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn schedules_set_each_epochs_learning_rate() {
    let data = blobs(60, 5);
    let mut net = Classifier::<f32>::new(3);
    let mut opt = Sgd::new(0.1);
    let config = FitConfig::new(4, 16)
        .schedule(StepLr {
            step_size: 2,
            gamma: 0.5,
        })
        .progress(Progress::Silent);
    let history = net
        .fit(&data, None, &CrossEntropy::default(), &mut opt, &config)
        .unwrap();
    let rates: Vec<f64> = history.epochs.iter().map(|e| e.learning_rate).collect();
    assert_eq!(rates, [0.1, 0.1, 0.05, 0.05]);
}

#[test]
fn monitoring_validation_without_validation_data_is_an_error() {
    let data = blobs(30, 6);
    let mut net = Classifier::<f32>::new(4);
    let config = FitConfig::new(2, 8)
        .early_stopping(EarlyStopping::new(Monitor::ValAccuracy, 1))
        .progress(Progress::Silent);
    let err = net
        .fit(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Adam::new(1e-3),
            &config,
        )
        .unwrap_err();
    assert!(err.to_string().contains("val_accuracy"), "{err}");
    assert_eq!(net.steps(), 0);
}

#[test]
fn regression_fits_and_predicts_in_batches() {
    let xs: Vec<f32> = (0..200)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let ys: Vec<f32> = xs.chunks(2).map(|p| 2.0 * p[0] - p[1] + 0.5).collect();
    let data = Dataset::<f32, Shape1<2>, f32>::new(xs.clone(), ys.clone(), None).unwrap();
    let mut net = Regressor::<f32>::new(0);
    let config = FitConfig::new(60, 10).progress(Progress::Silent);
    let history = net
        .fit(&data, None, &Mse::default(), &mut Adam::new(0.05), &config)
        .unwrap();
    assert!(
        history.epochs[0].accuracy.is_none(),
        "no accuracy for regression"
    );
    assert!(history.epochs.last().unwrap().loss < 1e-4);
    let predicted = predict(&mut net, data.features(), 7);
    assert_eq!(predicted.batch(), 100);
    assert_eq!(
        predicted,
        net.forward(data.features()),
        "batched prediction equals one pass"
    );
}

#[test]
fn a_diverging_run_is_an_error_not_a_nan_model() {
    let xs: Vec<f32> = (0..40).map(|i| i as f32).collect();
    let ys: Vec<f32> = (0..20).map(|i| i as f32).collect();
    let data = Dataset::<f32, Shape1<2>, f32>::new(xs, ys, None).unwrap();
    let mut net = Regressor::<f32>::new(1);
    let config = FitConfig::new(20, 20).progress(Progress::Silent);
    let err = net
        .fit(&data, None, &Mse::default(), &mut Sgd::new(1e3), &config)
        .unwrap_err();
    assert!(matches!(err, Error::NonFiniteLoss { .. }), "{err}");
    assert!(
        net.params().as_slice().iter().all(|v| v.is_finite()),
        "the last good parameters remain"
    );
}

/// Counts what it sees and stops training after `stop_after` epochs.
struct Counter {
    stop_after: usize,
    began: usize,
    batches: usize,
    epochs_seen: Vec<usize>,
    ended: bool,
}

impl<M: Model<f32>> Callback<f32, M> for Counter {
    fn on_train_begin(&mut self, fit: &mut FitState<'_, f32, M>) -> kiln::Result<()> {
        self.began += 1;
        assert!(fit.history.epochs.is_empty());
        Ok(())
    }

    fn on_batch_end(&mut self, log: &BatchLog, _: &mut FitState<'_, f32, M>) -> kiln::Result<()> {
        assert!(log.batch < log.batches && log.loss.is_finite());
        self.batches += 1;
        Ok(())
    }

    fn on_epoch_end(&mut self, log: &EpochLog, fit: &mut FitState<'_, f32, M>) -> kiln::Result<()> {
        // The history already holds the epoch; the model can be read.
        assert_eq!(fit.history.epochs.last(), Some(log));
        assert!(fit.model.params().as_slice().iter().all(|v| v.is_finite()));
        self.epochs_seen.push(log.epoch);
        if log.epoch + 1 == self.stop_after {
            fit.stop = true;
        }
        Ok(())
    }

    fn on_train_end(&mut self, _: &mut FitState<'_, f32, M>) -> kiln::Result<()> {
        self.ended = true;
        Ok(())
    }
}

use kiln::train::EpochLog;

#[test]
fn a_callback_sees_every_batch_and_epoch_and_can_stop_training() {
    let data = blobs(96, 4);
    let mut net = Classifier::<f32>::new(0);
    let mut counter = Counter {
        stop_after: 3,
        began: 0,
        batches: 0,
        epochs_seen: Vec::new(),
        ended: false,
    };
    let config = FitConfig::new(10, 16).progress(Progress::Silent);
    let history = net
        .fit_with_callbacks(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Adam::new(1e-2),
            &config,
            &mut [&mut counter],
        )
        .unwrap();
    assert_eq!(history.epochs.len(), 3, "stopped after the third epoch");
    assert_eq!(counter.epochs_seen, [0, 1, 2]);
    assert_eq!(counter.batches, 3 * 6);
    assert_eq!(net.steps(), 3 * 6);
    assert!(counter.began == 1 && counter.ended);
}

#[test]
fn reduce_lr_on_plateau_cuts_the_rate_after_patience_epochs() {
    let data = blobs(64, 5);
    let mut net = Classifier::<f32>::new(0);
    // A rate too small to move the loss by min_delta: every epoch after the first is
    // a plateau.
    let mut plateau = ReduceLrOnPlateau::new(Monitor::Loss)
        .factor(0.5)
        .patience(2);
    let config = FitConfig::new(6, 64).progress(Progress::Silent);
    let history = net
        .fit_with_callbacks(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Sgd::new(1e-9),
            &config,
            &mut [&mut plateau],
        )
        .unwrap();
    let rates: Vec<f64> = history.epochs.iter().map(|e| e.learning_rate).collect();
    let expected = [1e-9, 1e-9, 1e-9, 5e-10, 5e-10, 2.5e-10];
    for (rate, expected) in rates.iter().zip(expected) {
        assert!((rate - expected).abs() < 1e-20, "{rates:?}");
    }
    // Validation loss without validation data is an error, not a silent no-op.
    let mut on_val = ReduceLrOnPlateau::new(Monitor::ValLoss);
    assert!(net
        .fit_with_callbacks(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Sgd::new(0.1),
            &config,
            &mut [&mut on_val],
        )
        .is_err());
}

#[test]
fn the_csv_logger_writes_every_epoch_as_it_ends() {
    let data = blobs(90, 6);
    let dir = std::env::temp_dir().join(format!("kiln-csv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log.csv");
    let mut net = Classifier::<f32>::new(0);
    let mut logger = CsvLogger::new(&path);
    let config = FitConfig::new(3, 16)
        .validation_split(0.2)
        .progress(Progress::Silent);
    let history = net
        .fit_with_callbacks(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Adam::new(1e-2),
            &config,
            &mut [&mut logger],
        )
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,loss,accuracy,val_loss,val_accuracy,top_k,val_top_k,f1_macro,val_f1_macro,learning_rate,grad_norm,seconds"
    );
    assert_eq!(lines.len(), 4);
    for (line, epoch) in lines[1..].iter().zip(&history.epochs) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), 12);
        assert_eq!(cells[0], epoch.epoch.to_string());
        assert_eq!(cells[1].parse::<f64>().unwrap(), epoch.loss);
        assert_eq!(cells[3].parse::<f64>().unwrap(), epoch.val_loss.unwrap());
        assert_eq!(
            cells[4].parse::<f64>().unwrap(),
            epoch.val_accuracy.unwrap()
        );
        assert_eq!(cells[5..9], ["", "", "", ""], "no metrics asked for");
        assert_eq!(cells[10], "", "no clipping, no norm");
    }
    // A path that cannot be written stops fit before training.
    let mut bad = CsvLogger::new(dir.join("missing").join("log.csv"));
    assert!(net
        .fit_with_callbacks(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Adam::new(1e-2),
            &config,
            &mut [&mut bad],
        )
        .is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn warmup_cosine_rises_then_falls_step_by_step() {
    let data = blobs(64, 7);
    let mut net = Classifier::<f32>::new(0);
    let rates = std::sync::Mutex::new(Vec::new());
    struct Record<'a>(&'a std::sync::Mutex<Vec<f64>>);
    impl<M: Model<f32>> Callback<f32, M> for Record<'_> {
        fn on_batch_end(
            &mut self,
            _: &BatchLog,
            fit: &mut FitState<'_, f32, M>,
        ) -> kiln::Result<()> {
            self.0.lock().unwrap().push(fit.learning_rate);
            Ok(())
        }
    }
    let config = FitConfig::new(4, 16)
        .schedule(WarmupCosine {
            warmup: 1.0,
            total: 4.0,
            eta_min: 0.0,
        })
        .progress(Progress::Silent);
    net.fit_with_callbacks(
        &data,
        None,
        &CrossEntropy::default(),
        &mut Adam::new(0.1),
        &config,
        &mut [&mut Record(&rates)],
    )
    .unwrap();
    let rates = rates.into_inner().unwrap();
    assert_eq!(rates.len(), 16);
    // Four steps of warm-up to the base rate, then the cosine down to 0.
    for (step, rate) in rates[..4].iter().enumerate() {
        assert!(
            (rate - 0.1 * (step + 1) as f64 / 4.0).abs() < 1e-12,
            "{rates:?}"
        );
    }
    assert!(rates[4..].windows(2).all(|w| w[1] < w[0]), "{rates:?}");
    assert!(rates[15].abs() < 1e-12);
    let middle = 0.1 * 0.5 * (1.0 + (std::f64::consts::PI * 0.5).cos());
    assert!((rates[9] - middle).abs() < 1e-12, "{rates:?}");
}

#[test]
fn fit_computes_top_k_and_macro_f1_each_epoch() {
    use kiln::metrics::Metric;
    let data = blobs(240, 8);
    let (train, validation) = data.split(0.25, 3);
    let mut net = Classifier::<f32>::new(0);
    let config = FitConfig::new(4, 16)
        .metrics(&[Metric::TopK(2), Metric::F1Macro])
        .progress(Progress::Silent);
    let history = net
        .fit(
            &train,
            Some(&validation),
            &CrossEntropy::default(),
            &mut Adam::new(1e-2),
            &config,
        )
        .unwrap();
    let last = history.epochs.last().unwrap();
    let (top2, f1) = (last.val_top_k.unwrap(), last.val_f1_macro.unwrap());
    assert!(last.top_k.unwrap() >= last.accuracy.unwrap());
    assert!(top2 >= last.val_accuracy.unwrap() && top2 <= 1.0);
    // The validation F1 is the confusion matrix's macro F1 of the same predictions.
    let predictions = kiln::train::predict_classes(&mut net, validation.features(), 64);
    let matrix = ConfusionMatrix::new(&predictions, validation.targets(), 3).unwrap();
    assert!((matrix.report().macro_avg.f1 - f1).abs() < 1e-12, "{f1}");
    let scored = kiln::train::evaluate_metrics(
        &mut net,
        &validation,
        &CrossEntropy::default(),
        64,
        &[Metric::TopK(3)],
    )
    .unwrap();
    assert_eq!(scored.top_k, Some(1.0), "every label is among all three");
    assert_eq!(scored.f1_macro, None);
    // Metrics that need labels, on a regression: an error before training.
    let x: Vec<f32> = (0..20).map(|i| i as f32 / 10.0).collect();
    let y: Vec<f32> = x.iter().step_by(2).copied().collect();
    let regression = Dataset::<f32, Shape1<2>, f32>::new(x, y, None).unwrap();
    let mut regressor = Regressor::<f32>::new(0);
    let bad = FitConfig::new(1, 4)
        .metrics(&[Metric::F1Macro])
        .progress(Progress::Silent);
    assert!(regressor
        .fit(&regression, None, &Mse::default(), &mut Sgd::new(0.1), &bad)
        .is_err());
    let too_many = FitConfig::new(1, 4)
        .metrics(&[Metric::TopK(4)])
        .progress(Progress::Silent);
    assert!(net
        .fit(
            &train,
            None,
            &CrossEntropy::default(),
            &mut Sgd::new(0.1),
            &too_many
        )
        .is_err());
}

#[test]
fn bad_batch_sizes_and_splits_are_errors_not_silent_clamps() {
    let data = blobs(30, 9);
    let mut net = Classifier::<f32>::new(0);
    let fit = |net: &mut Classifier<f32>, config: &FitConfig| {
        net.fit(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Sgd::new(0.1),
            config,
        )
        .map(|_| ())
    };
    let silent = |c: FitConfig| c.progress(Progress::Silent);
    for bad in [
        silent(FitConfig::new(1, 0)),
        silent(FitConfig::new(1, 8).validation_split(0.0)),
        silent(FitConfig::new(1, 8).validation_split(1.0)),
        silent(FitConfig::new(1, 8).validation_split(f64::NAN)),
    ] {
        let err = fit(&mut net, &bad).unwrap_err();
        assert!(
            matches!(err, kiln::Error::InvalidHyperParameter { .. }),
            "{err}"
        );
    }
    assert_eq!(net.steps(), 0);
    assert!(net.evaluate(&data, &CrossEntropy::default(), 0).is_err());
    // A batch larger than the data set is the whole set, without reserving for the size
    // asked.
    fit(&mut net, &silent(FitConfig::new(1, usize::MAX))).unwrap();
    assert_eq!(net.steps(), 1);
    let scored = net
        .evaluate(&data, &CrossEntropy::default(), usize::MAX)
        .unwrap();
    assert_eq!(scored.samples, 30);
}
