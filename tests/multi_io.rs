//! Models with several named inputs and outputs: datasets built from named buffers,
//! training on a weighted loss per output, each output scored, named inference, token
//! inputs, and a typed error for every misfit.

use kiln::prelude::*;

kiln::model! {
    /// Two inputs, two heads: which of `a`'s values is largest, and which of `b`'s.
    struct TwoHeads {
        inputs: { a: [4], b: [3] },
        joined: Concat(a, b) >> { Dense(32), Relu },
        outputs: { first: joined >> Dense(4), second: joined >> Dense(3) },
    }
}

kiln::model! {
    /// Two towers of embeddings, joined with dense context features.
    struct Towers {
        inputs: { user: [1], item: [1], context: [2] },
        u: user >> { Embedding(5, 4), Flatten },
        i: item >> { Embedding(7, 4), Flatten },
        joined: Concat(u, i, context) >> { Dense(8), Relu },
        outputs: { click: joined >> Dense(1), rating: joined >> Dense(1) },
    }
}

/// `n` samples: `a` and `b` uniform in [-1, 1), their argmaxes as labels.
fn argmax_data(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<usize>, Vec<usize>) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let (mut a, mut b, mut la, mut lb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let xa: Vec<f32> = (0..4).map(|_| next()).collect();
        let xb: Vec<f32> = (0..3).map(|_| next()).collect();
        let arg = |x: &[f32]| (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best });
        la.push(arg(&xa));
        lb.push(arg(&xb));
        a.extend(xa);
        b.extend(xb);
    }
    (a, b, la, lb)
}

/// [`argmax_data`] as a dataset of both heads' labels.
fn argmax_dataset(n: usize, seed: u64) -> kiln::data::Dataset<f32, Shape1<7>> {
    let (a, b, la, lb) = argmax_data(n, seed);
    TwoHeads::<f32>::dataset(
        TwoHeadsInputs { a: &a, b: &b },
        TwoHeadsOutputs {
            first: &la,
            second: &lb,
        },
    )
    .unwrap()
}

#[test]
fn each_head_learns_its_task_and_is_scored_on_its_own() {
    let (train, test) = (argmax_dataset(4000, 1), argmax_dataset(1000, 2));
    let loss = TwoHeadsOutputs {
        first: CrossEntropy::default(),
        second: CrossEntropy::default().weight(0.5),
    };
    let mut model = TwoHeads::<f32>::new(3);
    let config = FitConfig::new(12, 32).progress(Progress::Silent);
    let history = model
        .fit(&train, Some(&test), &loss, &mut Adam::new(3e-3), &config)
        .unwrap();
    let last = history.epochs.last().unwrap();
    // A loss of several outputs has no single accuracy; each output has its own.
    assert_eq!(last.accuracy, None);
    let scores = model.evaluate_outputs(&test, &loss, 256).unwrap();
    let (first, second) = (
        scores.first.accuracy.unwrap(),
        scores.second.accuracy.unwrap(),
    );
    println!(
        "argmax of 4: {first:.4} (loss {:.4}); argmax of 3: {second:.4} (loss {:.4})",
        scores.first.loss, scores.second.loss
    );
    assert!(first > 0.9 && second > 0.9, "{first} {second}");
    // The total is the weighted sum of the outputs' losses.
    let total = model.evaluate(&test, &loss, 256).unwrap().loss;
    assert!((total - (scores.first.loss + scores.second.loss)).abs() < 1e-5);
    assert!((last.val_loss.unwrap() - total).abs() < 1e-5);
}

kiln::model! {
    /// Keras's functional-API example in small: two texts and tag features in, a
    /// priority score and a department out.
    struct Triage {
        inputs: { title: [6], body: [10], tags: [4] },
        t: title >> { Embedding(12, 8), Gru(8), LastStep },
        b: body >> { Embedding(12, 8), Gru(8), LastStep },
        joined: Concat(t, b, tags) >> { Dense(32), Relu },
        outputs: { priority: joined >> Dense(1), department: joined >> Dense(4) },
    }
}

/// `n` tickets: the department is the token most frequent in the title (among 0..4,
/// one-hot), the priority whether the first tag is positive (1 or 0) and the body is
/// noise.
fn tickets(n: usize, seed: u64) -> kiln::data::Dataset<f32, Shape1<20>, f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state >> 40
    };
    let (mut title, mut body, mut tags) = (Vec::new(), Vec::new(), Vec::new());
    let (mut priority, mut department) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let dept = (next() % 4) as usize;
        for i in 0..6 {
            // Three of six title tokens are the department's; the rest are 4..12.
            let token = if i % 2 == 0 {
                dept as u64
            } else {
                4 + next() % 8
            };
            title.push(token as f32);
        }
        body.extend((0..10).map(|_| (next() % 12) as f32));
        let t: Vec<f32> = (0..4)
            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        priority.push(if t[0] > 0.0 { 1.0 } else { 0.0 });
        tags.extend(t);
        department.extend((0..4).map(|d| if d == dept { 1.0 } else { 0.0 }));
    }
    Triage::<f32>::dataset(
        TriageInputs {
            title: &title,
            body: &body,
            tags: &tags,
        },
        TriageOutputs {
            priority: &priority,
            department: &department,
        },
    )
    .unwrap()
}

#[test]
fn outputs_of_different_kinds_share_one_dataset_of_values() {
    let (train, test) = (tickets(2000, 11), tickets(500, 12));
    let loss = TriageOutputs {
        priority: BceWithLogits::default(),
        department: CategoricalCrossEntropy::default().weight(0.2),
    };
    let mut model = Triage::<f32>::new(4);
    let config = FitConfig::new(8, 32).seed(1).progress(Progress::Silent);
    let history = model
        .fit(&train, Some(&test), &loss, &mut Adam::new(3e-3), &config)
        .unwrap();
    // The department's one-hot rows are scored as a classifier's; the priority's
    // values are not.
    let last = history.epochs.last().unwrap();
    let department = last.output("department").unwrap();
    let priority = last.output("priority").unwrap();
    assert_eq!(priority.accuracy, None);
    let (train_acc, val_acc) = (
        department.accuracy.unwrap(),
        department.val_accuracy.unwrap(),
    );
    let scores = model.evaluate_outputs(&test, &loss, 128).unwrap();
    println!(
        "department accuracy {train_acc:.4} (validation {val_acc:.4}); priority loss {:.4}",
        scores.priority.loss
    );
    assert_eq!(scores.department.accuracy, Some(val_acc));
    assert!(val_acc > 0.95, "{val_acc}");
    // A priority guessed at 1/2 costs ln 2 = 0.693; the tag gives it away.
    assert!(scores.priority.loss < 0.2, "{}", scores.priority.loss);
    // A department row that is not a distribution is a typed error naming its place.
    let mut bad = test.targets().to_vec();
    bad[1] = 2.0;
    let error = model
        .value_and_grad(
            TensorRef::<f32, Shape1<20>>::new(&test.features().as_slice()[..20 * 5]).unwrap(),
            &bad[..25],
            &loss,
        )
        .unwrap_err();
    assert!(matches!(error, Error::InvalidTarget { .. }), "{error}");
}

#[test]
fn named_inference_reads_each_output_from_the_workspace() {
    let (a, b, _, _) = argmax_data(5, 3);
    let mut model = TwoHeads::<f64>::new(4);
    let (a, b): (Vec<f64>, Vec<f64>) = (
        a.iter().map(|&v| v as f64).collect(),
        b.iter().map(|&v| v as f64).collect(),
    );
    let packed = TwoHeads::<f64>::pack_inputs(TwoHeadsInputs { a: &a, b: &b }).unwrap();
    assert_eq!(packed.len(), 5 * 7);
    assert_eq!(&packed[..7], &[&a[..4], &b[..3]].concat()[..]);
    let whole = model.forward(TensorRef::new(&packed).unwrap());
    let outputs = model
        .infer_outputs(TwoHeadsInputs { a: &a, b: &b })
        .unwrap();
    for s in 0..5 {
        let row = &whole.as_slice()[s * 7..(s + 1) * 7];
        assert_eq!(&outputs.first[s * 4..(s + 1) * 4], &row[..4]);
        assert_eq!(&outputs.second[s * 3..(s + 1) * 3], &row[4..]);
    }
    assert_eq!(TwoHeads::<f64>::OUTPUTS[1].name, "second");
    assert_eq!(TwoHeads::<f64>::INPUTS[0].size, 4);
}

#[test]
fn misfitting_named_data_is_a_typed_error_naming_the_culprit() {
    let (a, b) = (vec![0.0f32; 8], vec![0.0f32; 9]);
    let err = TwoHeads::<f32>::pack_inputs(TwoHeadsInputs { a: &a, b: &b }).unwrap_err();
    assert!(err.to_string().contains("`a` has 2 but `b` has 3"), "{err}");
    let err = TwoHeads::<f32>::pack_inputs(TwoHeadsInputs { a: &a[..7], b: &b }).unwrap_err();
    assert!(err.to_string().contains("input `a` has 7 values"), "{err}");
    let err = TwoHeads::<f32>::dataset(
        TwoHeadsInputs { a: &a, b: &b[..6] },
        TwoHeadsOutputs {
            first: &[0usize, 1][..],
            second: &[0usize, 1, 2][..],
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("output `second` has 3 targets"),
        "{err}"
    );
    let mut model = TwoHeads::<f32>::new(0);
    let err = model
        .infer_outputs(TwoHeadsInputs { a: &a, b: &b })
        .unwrap_err();
    assert!(matches!(err, kiln::Error::Mismatch(_)), "{err}");
    let (mut bad_a, b) = (vec![0.0f32; 8], vec![0.0f32; 6]);
    bad_a[5] = f32::NAN;
    let err = model
        .infer_outputs(TwoHeadsInputs { a: &bad_a, b: &b })
        .unwrap_err();
    // Sample 1's `a` starts at 7 in the packed input.
    assert!(
        matches!(err, kiln::Error::NonFiniteInput { index: 8, .. }),
        "{err}"
    );
    // A label out of one output's range, and metrics that read one output.
    let data = TwoHeads::<f32>::dataset(
        TwoHeadsInputs { a: &a, b: &b },
        TwoHeadsOutputs {
            first: &[0usize, 1][..],
            second: &[0usize, 3][..],
        },
    )
    .unwrap();
    let loss = TwoHeadsOutputs {
        first: CrossEntropy::default(),
        second: CrossEntropy::default(),
    };
    let err = model.evaluate(&data, &loss, 2).unwrap_err();
    assert!(
        matches!(err, kiln::Error::LabelOutOfRange { label: 3, .. }),
        "{err}"
    );
    let config = FitConfig::new(1, 2)
        .metrics(&[kiln::metrics::Metric::TopK(2)])
        .progress(Progress::Silent);
    let err = model
        .fit(&data, None, &loss, &mut Sgd::new(0.1), &config)
        .unwrap_err();
    assert!(err.to_string().contains("evaluate_outputs"), "{err}");
    // Losses that mix reductions cannot be accumulated together.
    let mixed = TwoHeadsOutputs {
        first: CrossEntropy::default(),
        second: CrossEntropy {
            reduction: Reduction::Sum,
        },
    };
    assert!(matches!(
        model.evaluate(&data, &mixed, 2),
        Err(kiln::Error::Mismatch(_))
    ));
    // A negative weight.
    let negative = TwoHeadsOutputs {
        first: CrossEntropy::default(),
        second: CrossEntropy::default().weight(-1.0),
    };
    assert!(matches!(
        model.evaluate(&data, &negative, 2),
        Err(kiln::Error::InvalidHyperParameter { .. })
    ));
}

#[test]
fn token_inputs_are_checked_against_their_own_vocabulary() {
    let mut model = Towers::<f32>::new(1);
    assert_eq!(
        Towers::<f32>::summary().0.params[0].name,
        "u.0.weight",
        "a node's sequence is named as a branch is"
    );
    // Users 0..5, items 0..7: item 6 is valid, user 6 is not.
    let (users, items, context) = ([4.0f32, 1.0], [6.0f32, 0.0], [0.5f32, -0.5, 1.0, 0.0]);
    model
        .infer_outputs(TowersInputs {
            user: &users,
            item: &items,
            context: &context,
        })
        .unwrap();
    let err = model
        .infer_outputs(TowersInputs {
            user: &[0.0, 6.0],
            item: &items,
            context: &context,
        })
        .unwrap_err();
    // Sample 1's user id sits at 4 of the packed input (4 values a sample).
    assert!(
        matches!(
            err,
            kiln::Error::TokenOutOfRange {
                index: 4,
                vocab: 5,
                ..
            }
        ),
        "{err}"
    );
    // Regression targets for both outputs; the token inputs have no gradient.
    let data = Towers::<f32>::dataset(
        TowersInputs {
            user: &users,
            item: &items,
            context: &context,
        },
        TowersOutputs {
            click: &[1.0f32, 0.0][..],
            rating: &[4.0f32, 2.0][..],
        },
    )
    .unwrap();
    let loss = TowersOutputs {
        click: BceWithLogits::default(),
        rating: Mse::default().weight(0.2),
    };
    let before = model.evaluate(&data, &loss, 2).unwrap().loss;
    let config = FitConfig::new(30, 2).progress(Progress::Silent);
    model
        .fit(&data, None, &loss, &mut Adam::new(1e-2), &config)
        .unwrap();
    let after = model.evaluate(&data, &loss, 2).unwrap().loss;
    assert!(after < before / 2.0, "{before} -> {after}");
    let x = TensorRef::new(&[0.0f32, 0.0, 0.0, 0.0]).unwrap();
    model.forward_train(x);
    assert!(model.backward_to_input(&[0.0, 0.0]).is_err());
}

#[test]
fn a_graph_model_saves_and_loads_by_name() {
    let dir = std::env::temp_dir().join(format!("kiln-multi-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("towers.safetensors");
    let model = Towers::<f32>::new(7);
    model.save(&path).unwrap();
    let mut loaded = Towers::<f32>::new(8);
    loaded.load(&path).unwrap();
    assert_eq!(model.params().as_slice(), loaded.params().as_slice());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Stops training with an error after `n` batches, as a crash would.
struct FailAfter(usize);

impl<M: Model<f32>> Callback<f32, M> for FailAfter {
    fn on_batch_end(&mut self, _: &BatchLog, _: &mut FitState<'_, f32, M>) -> kiln::Result<()> {
        if self.0 == 0 {
            return Err(kiln::Error::Mismatch("interrupted".into()));
        }
        self.0 -= 1;
        Ok(())
    }
}

#[test]
fn history_reports_each_output_and_callbacks_watch_any_of_them() {
    let data = argmax_dataset(600, 5);
    let (train, validation) = data.split(0.2, 1);
    let loss = TwoHeadsOutputs {
        first: CrossEntropy::default(),
        second: CrossEntropy::default().weight(0.5),
    };
    let dir = std::env::temp_dir().join(format!("kiln-multi-io-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = |backup: Option<&str>| {
        let mut config = FitConfig::new(4, 16)
            .seed(2)
            .checkpoint(
                dir.join("best.safetensors"),
                Monitor::OutputValAccuracy("second"),
            )
            .early_stopping(EarlyStopping::new(Monitor::OutputValLoss("first"), 5))
            .progress(Progress::Silent);
        if let Some(name) = backup {
            config = config.backup_every(dir.join(name), 7);
        }
        config
    };
    let mut csv = CsvLogger::new(dir.join("log.csv"));
    let mut model = TwoHeads::<f32>::new(9);
    let history = model
        .fit_with_callbacks(
            &train,
            Some(&validation),
            &loss,
            &mut Adam::new(3e-3),
            &config(None),
            &mut [&mut csv],
        )
        .unwrap();
    for log in &history.epochs {
        let (first, second) = (log.output("first").unwrap(), log.output("second").unwrap());
        // The total is the sum of the outputs' (weighted) losses, in training and
        // validation alike.
        assert!(
            (log.loss - (first.loss + second.loss)).abs() < 1e-4,
            "{log:?}"
        );
        let val = first.val_loss.unwrap() + second.val_loss.unwrap();
        assert!((log.val_loss.unwrap() - val).abs() < 1e-4, "{log:?}");
        assert!(first.accuracy.is_some() && second.val_accuracy.is_some());
    }
    let header = std::fs::read_to_string(dir.join("log.csv")).unwrap();
    let header = header.lines().next().unwrap();
    assert!(
        header.ends_with(",first_loss,first_accuracy,val_first_loss,val_first_accuracy,second_loss,second_accuracy,val_second_loss,val_second_accuracy"),
        "{header}"
    );
    // An interrupted run resumes from its backup to the same history, outputs included.
    let mut interrupted = TwoHeads::<f32>::new(9);
    let err = interrupted
        .fit_with_callbacks(
            &train,
            Some(&validation),
            &loss,
            &mut Adam::new(3e-3),
            &config(Some("backup.kiln")),
            &mut [&mut FailAfter(50)],
        )
        .unwrap_err();
    assert!(err.to_string().contains("interrupted"));
    let mut resumed = TwoHeads::<f32>::new(9);
    let again = resumed
        .fit_with_callbacks(
            &train,
            Some(&validation),
            &loss,
            &mut Adam::new(3e-3),
            &config(Some("backup.kiln")),
            &mut [&mut FailAfter(usize::MAX)],
        )
        .unwrap();
    assert_eq!(again.epochs.len(), history.epochs.len());
    for (x, y) in again.epochs.iter().zip(&history.epochs) {
        assert_eq!(x.outputs, y.outputs);
        assert_eq!(x.loss, y.loss);
    }
    assert_eq!(resumed.params().as_slice(), model.params().as_slice());
    // The loss of all outputs, weighted as a whole: each output's figures scale with it.
    let doubled = kiln::loss::Weighted {
        loss: TwoHeadsOutputs {
            first: CrossEntropy::default(),
            second: CrossEntropy::default().weight(0.5),
        },
        weight: 2.0,
    };
    let config = FitConfig::new(1, 16).seed(2).progress(Progress::Silent);
    let history = TwoHeads::<f32>::new(9)
        .fit(
            &train,
            Some(&validation),
            &doubled,
            &mut Adam::new(3e-3),
            &config,
        )
        .unwrap();
    let log = &history.epochs[0];
    let sum: f64 = log.outputs.iter().map(|o| o.loss).sum();
    assert!((log.loss - sum).abs() < 1e-4, "{log:?}");
    let val: f64 = log.outputs.iter().map(|o| o.val_loss.unwrap()).sum();
    assert!((log.val_loss.unwrap() - val).abs() < 1e-4, "{log:?}");
    // A monitor of an output the loss does not have.
    let wrong = FitConfig::new(1, 16)
        .early_stopping(EarlyStopping::new(Monitor::OutputLoss("third"), 1))
        .progress(Progress::Silent);
    let err = model
        .fit(&train, None, &loss, &mut Adam::new(3e-3), &wrong)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no output `third` (its outputs: first, second)"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
