//! Resumable training: a run interrupted at any moment — an error, or `kill -9` of the
//! process, even in the middle of writing a backup — and resumed from its backup ends
//! with the parameters, buffers and history of a run that was never interrupted, bit
//! for bit.
//!
//! The kill test runs this test binary as a child process (`child_trains` below,
//! ignored unless run by the kill test), kills it at random moments and starts it again
//! until it finishes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiln::data::{read_csv, Dataset, LabelColumn};
use kiln::metrics::Metric;
use kiln::prelude::*;
use kiln::Result;

kiln::model! {
    struct Digits {
        input: [64],
        fc1: Dense(48), bn: BatchNorm1d, Relu, drop: Dropout(0.25),
        out: Dense(10),
    }
}

fn digits() -> Dataset<f32, Shape1<64>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
    read_csv::<f32, Shape1<64>>(&path, LabelColumn::Last, 1.0 / 16.0, 10).unwrap()
}

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-resume-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Everything that can carry state across steps: dropout, batch norm's statistics,
/// Adam's moments, a per-step schedule, early stopping with its best weights, a
/// checkpoint, a plateau callback and metrics.
fn config(backup: &Path, every: usize) -> FitConfig {
    FitConfig::new(6, 32)
        .seed(7)
        .validation_split(0.2)
        .metrics(&[Metric::TopK(3), Metric::F1Macro])
        .schedule(WarmupCosine {
            warmup: 0.5,
            total: 6.0,
            eta_min: 1e-4,
        })
        .early_stopping(EarlyStopping::new(Monitor::ValLoss, 3))
        .checkpoint(backup.with_extension("best"), Monitor::ValAccuracy)
        .progress(Progress::Silent)
        .backup_every(backup, every)
}

/// A callback that fails after `after` batches in all, as a crash would stop the run.
struct FailAfter(usize);

impl<M: Model<f32>> Callback<f32, M> for FailAfter {
    fn on_batch_end(&mut self, _: &BatchLog, _: &mut FitState<'_, f32, M>) -> Result<()> {
        if self.0 == 0 {
            return Err(Error::Mismatch("interrupted".into()));
        }
        self.0 -= 1;
        Ok(())
    }
}

/// An epoch's metrics as bits, its timing left out.
type EpochBits = (usize, [Option<u64>; 10]);

/// Trains from scratch (or from the backup at `backup`) and returns the final
/// parameters and buffers as bytes, and the history without its timings.
fn train(
    backup: &Path,
    every: usize,
    model_seed: u64,
    fail_after: Option<usize>,
) -> Result<(Vec<u8>, Vec<EpochBits>)> {
    let data = digits();
    let mut net = Digits::<f32>::new(model_seed);
    let mut adam = Adam::new(3e-3);
    let mut plateau = ReduceLrOnPlateau::new(Monitor::ValLoss)
        .patience(1)
        .factor(0.5);
    let mut fail = FailAfter(fail_after.unwrap_or(usize::MAX));
    let history = net.fit_with_callbacks(
        &data,
        None,
        &CrossEntropy::default(),
        &mut adam,
        &config(backup, every),
        &mut [&mut plateau, &mut fail],
    )?;
    let mut bytes = Vec::new();
    for v in net
        .params()
        .as_slice()
        .iter()
        .chain(net.buffers().as_slice())
    {
        bytes.extend(v.to_le_bytes());
    }
    let logs = history
        .epochs
        .iter()
        .map(|e| {
            let bits = |v: Option<f64>| v.map(f64::to_bits);
            (
                e.epoch,
                [
                    Some(e.loss.to_bits()),
                    bits(e.accuracy),
                    bits(e.val_loss),
                    bits(e.val_accuracy),
                    Some(e.learning_rate.to_bits()),
                    bits(e.top_k),
                    bits(e.val_top_k),
                    bits(e.f1_macro),
                    bits(e.val_f1_macro),
                    bits(e.grad_norm),
                ],
            )
        })
        .collect();
    Ok((bytes, logs))
}

#[test]
fn an_interrupted_run_resumes_bit_for_bit() {
    let dir = dir("error");
    let backup = dir.join("run.backup");
    let reference = train(&dir.join("reference.backup"), 5, 0, None).unwrap();
    assert!(
        !dir.join("reference.backup").exists(),
        "a finished run removes its backup"
    );
    // Interrupted at several points (mid-epoch, at an epoch's end, twice in a row),
    // resumed each time by new objects; those of the resumed runs start from another
    // seed, which the backup must override entirely.
    for stops in [vec![7], vec![36], vec![37, 1], vec![44], vec![50, 50, 9]] {
        let _ = std::fs::remove_file(&backup);
        for (run, &after) in stops.iter().enumerate() {
            let seed = if run == 0 { 0 } else { 99 };
            let err = train(&backup, 5, seed, Some(after)).unwrap_err();
            assert!(err.to_string().contains("interrupted"), "{err}");
        }
        assert!(backup.exists(), "an interrupted run keeps its backup");
        // The backup also loads as a checkpoint.
        let mut net = Digits::<f32>::new(5);
        let report = net
            .load_with(&backup, &LoadOptions::new().strict(false))
            .unwrap();
        assert!(report.missing.is_empty(), "{:?}", report.missing);
        let resumed = train(&backup, 5, 99, None).unwrap();
        assert!(
            resumed.0 == reference.0,
            "stopped after {stops:?} batches: the parameters differ"
        );
        assert_eq!(resumed.1, reference.1, "stopped after {stops:?} batches");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_backup_of_other_settings_or_data_is_refused_and_kept() {
    let dir = dir("mismatch");
    let backup = dir.join("run.backup");
    train(&backup, 5, 0, Some(10)).unwrap_err();
    let before = std::fs::read(&backup).unwrap();
    let data = digits();
    let mut net = Digits::<f32>::new(0);
    let start = net.params().as_slice().to_vec();
    let err = net
        .fit(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Adam::new(3e-3),
            &FitConfig::new(6, 64)
                .seed(7)
                .validation_split(0.2)
                .progress(Progress::Silent)
                .backup(&backup),
        )
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("batch_size 32 (this run: 64)"),
        "{message}"
    );
    assert_eq!(net.params().as_slice(), start, "the model is untouched");
    assert_eq!(
        std::fs::read(&backup).unwrap(),
        before,
        "the backup is kept"
    );
    // A model checkpoint is not a backup.
    net.save(dir.join("model.safetensors")).unwrap();
    std::fs::copy(dir.join("model.safetensors"), &backup).unwrap();
    let err = train(&backup, 5, 0, None).unwrap_err();
    assert!(err.to_string().contains("not a training backup"), "{err}");
    // Nor is a truncated file.
    std::fs::write(&backup, &before[..before.len() / 2]).unwrap();
    let err = train(&backup, 5, 0, None).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_optimiser_without_saved_state_cannot_be_backed_up() {
    struct Plain(f64);
    impl kiln::Optimizer<f32> for Plain {
        fn step(&mut self, params: &mut [f32], grads: &[f32]) -> Result<()> {
            for (p, g) in params.iter_mut().zip(grads) {
                *p -= self.0 as f32 * g;
            }
            Ok(())
        }
        fn learning_rate(&self) -> f64 {
            self.0
        }
        fn set_learning_rate(&mut self, lr: f64) {
            self.0 = lr;
        }
    }
    let dir = dir("unsupported");
    let data = digits();
    let mut net = Digits::<f32>::new(0);
    let err = net
        .fit(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Plain(0.1),
            &FitConfig::new(1, 32)
                .progress(Progress::Silent)
                .backup(dir.join("b")),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The child process of the kill test: trains with the backup in `KILN_RESUME_CHILD`
/// and writes the final parameters beside it.
#[test]
#[ignore = "the child process of runs_killed_at_random_moments_resume_bit_for_bit, which runs it"]
fn child_trains() {
    let dir = PathBuf::from(std::env::var_os("KILN_RESUME_CHILD").expect("run by the kill test"));
    let (bytes, history) = train(&dir.join("run.backup"), 3, 0, None).unwrap();
    let mut out = bytes;
    out.extend(format!("{history:?}").as_bytes());
    std::fs::write(dir.join("final.tmp"), out).unwrap();
    std::fs::rename(dir.join("final.tmp"), dir.join("final")).unwrap();
}

fn spawn_child(dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_trains",
            "--ignored",
            "--test-threads",
            "1",
            "--quiet",
        ])
        .env("KILN_RESUME_CHILD", dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child to finish, failing with its output if it did not succeed.
fn finish(child: std::process::Child) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the child failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn runs_killed_at_random_moments_resume_bit_for_bit() {
    let trials: usize = std::env::var("KILN_RESUME_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let base = dir("kill");
    let reference_dir = base.join("reference");
    std::fs::create_dir_all(&reference_dir).unwrap();
    let started = Instant::now();
    finish(spawn_child(&reference_dir));
    let length = started.elapsed();
    let reference = std::fs::read(reference_dir.join("final")).unwrap();
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut kills, mut resumed_from_backup) = (0, 0);
    for trial in 0..trials {
        let dir = base.join(format!("trial{trial}"));
        std::fs::create_dir_all(&dir).unwrap();
        // One to three kills at moments spread over the run's length.
        for _ in 0..1 + random() % 3 {
            let mut child = spawn_child(&dir);
            let wait = Duration::from_micros(random() % length.as_micros().max(1) as u64);
            std::thread::sleep(wait);
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                kills += 1;
            }
            child.wait().unwrap();
            if dir.join("final").exists() {
                break;
            }
            if dir.join("run.backup").exists() {
                resumed_from_backup += 1;
            }
        }
        if !dir.join("final").exists() {
            finish(spawn_child(&dir));
        }
        let last = std::fs::read(dir.join("final")).unwrap();
        assert!(last == reference, "trial {trial}: the resumed run differs");
        assert!(
            !dir.join("run.backup").exists(),
            "trial {trial}: backup left"
        );
    }
    println!(
        "{trials} trials, {kills} kills ({resumed_from_backup} resumed from a backup), all bit-identical; one run takes {length:?}"
    );
    std::fs::remove_dir_all(&base).unwrap();
}
