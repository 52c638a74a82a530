//! Data-parallel training on MPI (the `mpi` feature; `mpirun` must be on the path, and
//! its absence is a failure, not a pass).
//!
//! MPI starts once per process, so each test runs this test binary's `rank` test
//! (ignored unless a test starts it) as the ranks of an `mpirun` job, which write their
//! parameters and history to files; the test then compares them with each other (bit
//! for bit) and with one process training on the same samples at twice the batch.

#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::distributed::{Communicator, Mpi};
use kiln::metrics::Metric;
use kiln::prelude::*;
use kiln::Result;

kiln::model! {
    struct Mlp { input: [6], fc1: Dense(16), Tanh, out: Dense(3) }
}

kiln::model! {
    struct Cnn {
        input: [1, 8, 8],
        conv: Conv2d(4, kernel = 3), Relu,
        MaxPool2d(2),
        drop: Dropout(0.3),
        Flatten,
        fc: Dense(3),
    }
}

kiln::model! {
    struct Seq { input: [5, 3], lstm: Lstm(6), LastStep, drop: Dropout(0.2), out: Dense(3) }
}

kiln::model! {
    /// Two inputs out of the six features, two heads.
    struct Heads {
        inputs: { a: [4], b: [2] },
        joined: Concat(a, b) >> { Dense(12), Tanh, Dropout(0.2) },
        outputs: { class: joined >> Dense(3), parity: joined >> Dense(2) },
    }
}

/// The six-feature data with both heads' labels: the class, and its parity.
fn heads_data(n: usize, salt: u64) -> Dataset<f64, Shape1<6>> {
    let plain = data::<f64, Shape1<6>>(n, salt);
    let targets: Vec<usize> = plain.targets().iter().flat_map(|&c| [c, c % 2]).collect();
    Dataset::new(plain.features().as_slice().to_vec(), targets, Some(3)).unwrap()
}

/// A two-input, two-output model: its history holds each output's figures, which the
/// ranks sum as they sum the total.
fn train_heads(config: FitConfig) -> Result<Run> {
    let (train, validation) = (heads_data(TRAIN, 1), heads_data(VALIDATION, 2));
    let mut model = Heads::<f64>::new(8);
    let loss = HeadsOutputs {
        class: CrossEntropy::default(),
        parity: CrossEntropy::default().weight(0.5),
    };
    let config = config.metrics(&[]);
    let history = model.fit(
        &train,
        Some(&validation),
        &loss,
        &mut Adam::new(0.01),
        &config,
    )?;
    let mut logs = Vec::new();
    for e in &history.epochs {
        logs.extend([e.loss, e.val_loss.unwrap()]);
        for o in &e.outputs {
            logs.extend([
                o.loss,
                o.accuracy.unwrap(),
                o.val_loss.unwrap(),
                o.val_accuracy.unwrap(),
            ]);
        }
    }
    assert_eq!(logs.len(), EPOCHS * 10);
    Ok(Run {
        params: model.params().as_slice().to_vec(),
        history: logs,
    })
}

/// Per-rank batch; one process trains at twice this.
const BATCH: usize = 8;
/// 97 = 6 global batches of 16 and one of a single sample, which leaves rank 0 with
/// no rows of its own in the last step of every epoch.
const TRAIN: usize = 97;
const VALIDATION: usize = 31;
const EPOCHS: usize = 3;

/// Deterministic features in [-1, 1) and labels a linear rule gives them.
fn data<T: Float, S: Shape>(n: usize, salt: u64) -> Dataset<T, S> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ salt;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 / (1_u64 << 53) as f64) * 2.0 - 1.0
    };
    let values: Vec<f64> = (0..n * S::SIZE).map(|_| next()).collect();
    let labels = values
        .chunks(S::SIZE)
        .map(|x| {
            let score = |k: usize| -> f64 {
                x.iter()
                    .enumerate()
                    .map(|(i, v)| v * (((i * 7 + k * 3) % 5) as f64 - 2.0))
                    .sum()
            };
            (0..3)
                .max_by(|&a, &b| score(a).total_cmp(&score(b)))
                .unwrap()
        })
        .collect();
    let features = values.into_iter().map(T::from_f64).collect();
    Dataset::new(features, labels, Some(3)).unwrap()
}

/// What a run leaves: the parameters (as f64) and, per epoch, the loss, accuracy,
/// validation loss and validation accuracy.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    params: Vec<f64>,
    history: Vec<f64>,
}

impl Run {
    fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = (self.params.len() as u64).to_le_bytes().to_vec();
        for v in self.params.iter().chain(&self.history) {
            bytes.extend(v.to_bits().to_le_bytes());
        }
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let values: Vec<f64> = bytes[8..]
            .chunks_exact(8)
            .map(|c| f64::from_bits(u64::from_le_bytes(c.try_into().unwrap())))
            .collect();
        Run {
            params: values[..n].to_vec(),
            history: values[n..].to_vec(),
        }
    }
}

/// Trains a fresh model (seeded by `seed`; rank 0's parameters win under MPI) with
/// `config` and returns the run.
fn train<T, M, O>(seed: u64, mut optimizer: O, config: &FitConfig, how: How<'_>) -> Result<Run>
where
    T: Float,
    M: Model<T> + Send,
    O: Optimizer<T> + Send,
{
    let train = data::<T, M::Input>(TRAIN - how.fewer, 1);
    let validation = data::<T, M::Input>(VALIDATION, 2);
    let mut model = M::with_seed(seed);
    if let Some(start) = how.start {
        model.load(start)?;
    }
    model.set_grad_clip(Some(GradClip::Norm(2.0)))?;
    let mut failing = how.fail.map(FailAt);
    let mut callbacks: Vec<&mut (dyn Callback<T, M> + Send)> = Vec::new();
    if let Some(failing) = &mut failing {
        callbacks.push(failing);
    }
    let history = model.fit_with_callbacks(
        &train,
        Some(&validation),
        &CrossEntropy::default(),
        &mut optimizer,
        config,
        &mut callbacks,
    )?;
    let mut logs = Vec::new();
    for e in &history.epochs {
        logs.extend([
            e.loss,
            e.accuracy.unwrap(),
            e.val_loss.unwrap(),
            e.val_accuracy.unwrap(),
            e.top_k.unwrap(),
            e.val_f1_macro.unwrap(),
        ]);
    }
    Ok(Run {
        params: model
            .params()
            .as_slice()
            .iter()
            .map(|v| v.to_f64())
            .collect(),
        history: logs,
    })
}

fn config(batch: usize) -> FitConfig {
    FitConfig::new(EPOCHS, batch)
        .seed(5)
        .metrics(&[Metric::TopK(2), Metric::F1Macro])
        .progress(Progress::Silent)
}

/// Runs `case` as every rank would (`comm` given) or as the one-process reference;
/// `checkpoint` is where the best model (by training loss) is saved.
fn run_case(case: &str, comm: Option<&Mpi>, how: How<'_>, checkpoint: &Path) -> Result<Run> {
    let batch = if comm.is_some() { BATCH } else { 2 * BATCH };
    let mut config = config(batch).checkpoint(checkpoint, Monitor::Loss);
    if let Some(comm) = comm {
        config = config.communicator(comm.clone());
    }
    let rank = comm.map_or(0, Communicator::rank);
    match case {
        // Each rank seeds its model differently: the broadcast makes them rank 0's.
        "mlp_f64" | "mlp_f64_tcp" => {
            train::<f64, Mlp<f64>, _>(3 + rank as u64, Adam::new(0.01), &config, how)
        }
        "mlp_f32" | "fail" | "panic" => train::<f32, Mlp<f32>, _>(3, Adam::new(0.01), &config, how),
        // Two micro-batches a step (the last step of an epoch takes one).
        "mlp_f64_accumulate" => {
            let config = config.accumulate(2);
            train::<f64, Mlp<f64>, _>(3, Adam::new(0.01), &config, how)
        }
        // Backed up every 2 steps: a run that fails and one that resumes.
        "resume_fail" | "resume" => {
            let backup = checkpoint.with_file_name("backup.safetensors");
            let config = config.backup_every(backup, 2);
            train::<f64, Cnn<f64>, _>(4, Sgd::new(0.05).momentum(0.9), &config, how)
        }
        "cnn_f64" => train::<f64, Cnn<f64>, _>(4, Sgd::new(0.05).momentum(0.9), &config, how),
        "lstm_f64" => train::<f64, Seq<f64>, _>(6, Adam::new(0.01), &config, how),
        "heads_f64" => train_heads(config),
        "disagree" => {
            let config = if rank == 1 { config.seed(6) } else { config };
            train::<f32, Mlp<f32>, _>(3, Adam::new(0.01), &config, how)
        }
        "disagree_settings" => {
            let rate = if rank == 1 { 0.02 } else { 0.01 };
            train::<f32, Mlp<f32>, _>(3, Adam::new(rate), &config, how)
        }
        // Rank 1 holds one training sample fewer: it would take other steps.
        "uneven" => {
            let fewer = usize::from(rank == 1);
            train::<f32, Mlp<f32>, _>(3, Adam::new(0.01), &config, How { fewer, ..how })
        }
        other => panic!("unknown case {other}"),
    }
}

/// What a run starts from (a saved model, or a fresh one) and how it fails, if it does.
#[derive(Clone, Copy, Default)]
struct How<'a> {
    start: Option<&'a Path>,
    fail: Option<Fail>,
    /// Training samples left out of the data set's end.
    fewer: usize,
}

/// How a case's rank 1 fails in the middle of the first epoch.
#[derive(Clone, Copy)]
enum Fail {
    Error,
    Panic,
}

struct FailAt(Fail);

impl<T: Float, M: Model<T>> Callback<T, M> for FailAt {
    fn on_batch_end(&mut self, log: &BatchLog, _: &mut FitState<'_, T, M>) -> Result<()> {
        if log.batch == 3 {
            match self.0 {
                Fail::Error => return Err(Error::Mismatch("rank 1 gives up on purpose".into())),
                Fail::Panic => panic!("rank 1 panics on purpose"),
            }
        }
        Ok(())
    }
}

/// `cnn_f64`'s training in a loop of one's own: each rank's part of every global batch,
/// its gradients summed across ranks, the update.
fn custom_loop(comm: &Mpi) -> Result<Run> {
    let (rank, size) = (comm.rank(), comm.size());
    let train = data::<f64, Shape3<1, 8, 8>>(TRAIN, 1);
    // Built from another seed on each rank: rank 0's parameters win.
    let mut model = Cnn::<f64>::new(if rank == 0 { 4 } else { 40 });
    model.broadcast_parameters(comm)?;
    model.set_grad_clip(Some(GradClip::Norm(2.0)))?;
    let mut sgd = Sgd::new(0.05).momentum(0.9);
    let mut batches = train.batches(BATCH, Some(5)).sharded(rank, size);
    for epoch in 0..EPOCHS {
        batches.start_epoch(epoch);
        while let Some((x, y, part)) = batches.next_batch_part() {
            model.set_batch_part(Some(part));
            model.value_and_grad(x, y, &CrossEntropy::default())?;
            model.all_reduce_gradients(comm, part.rows as f64 / part.total as f64)?;
            model.apply_gradients(&mut sgd)?;
        }
    }
    Ok(Run {
        params: model.params().as_slice().to_vec(),
        history: Vec::new(),
    })
}

/// One rank of an `mpirun` job started by a test below.
#[test]
#[ignore = "a rank of an mpirun job that the tests below start"]
fn rank() {
    let case = std::env::var("KILN_DP_CASE").expect("KILN_DP_CASE");
    let out = PathBuf::from(std::env::var("KILN_DP_OUT").expect("KILN_DP_OUT"));
    let comm = Mpi::init().unwrap();
    let fail = match case.as_str() {
        "fail" if comm.rank() == 1 => Some(Fail::Error),
        "panic" if comm.rank() == 1 => Some(Fail::Panic),
        "resume_fail" if comm.rank() == 1 => Some(Fail::Error),
        _ => None,
    };
    let start = std::env::var_os("KILN_DP_START").map(PathBuf::from);
    let how = How {
        start: start.as_deref(),
        fail,
        fewer: 0,
    };
    let run = if case == "cnn_custom" {
        custom_loop(&comm)
    } else {
        run_case(&case, Some(&comm), how, &out.join("best.safetensors"))
    };
    match run {
        Ok(run) => {
            let path = out.join(format!("rank{}.bin", comm.rank()));
            std::fs::write(path, run.to_bytes()).unwrap();
        }
        // Every rank reaches here together (the ranks disagree before any step).
        Err(e) => println!("rank {} returned: {e}", comm.rank()),
    }
}

fn mpirun() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("mpirun"))
        .find(|p| p.is_file());
    found.expect("mpirun is not on the path: install Open MPI (see docs/distributed.md)")
}

struct Job {
    status: std::process::ExitStatus,
    output: String,
    seconds: f64,
    out: PathBuf,
}

/// Runs `case` on two ranks (one thread each), with extra `mpirun` arguments.
fn job(case: &str, extra: &[&str], start: Option<&Path>) -> Job {
    let out = std::env::temp_dir().join(format!("kiln-dp-{case}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    job_in(case, extra, start, out)
}

/// [`job`], writing to `out` as it is.
fn job_in(case: &str, extra: &[&str], start: Option<&Path>, out: PathBuf) -> Job {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(mpirun());
    // Root runs mpirun only when asked to (CI runs as root).
    command.args(["--allow-run-as-root", "--oversubscribe", "-np", "2"]);
    // Each job's Open MPI session directory under its own `out`: jobs started at once
    // by parallel tests raced to create the shared one (`/tmp/ompi.<host>.0`: "File
    // exists", orte_init failed).
    command.env("TMPDIR", &out);
    command.args(extra);
    if let Some(start) = start {
        command
            .args(["-x", "KILN_DP_START"])
            .env("KILN_DP_START", start);
    }
    command
        .args([
            "-x",
            "KILN_DP_CASE",
            "-x",
            "KILN_DP_OUT",
            "-x",
            "RAYON_NUM_THREADS",
        ])
        .arg(exe)
        .args([
            "rank",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KILN_DP_CASE", case)
        .env("KILN_DP_OUT", &out)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("mpirun starts");
    // Read both pipes on threads so that a chatty job cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let read_out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let read_err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(300) {
            child.kill().unwrap();
            panic!("the {case} job did not end within 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = started.elapsed().as_secs_f64();
    let output = read_out.join().unwrap() + &read_err.join().unwrap();
    Job {
        status,
        output,
        seconds,
        out,
    }
}

fn read_rank(job: &Job, rank: usize) -> Run {
    let path = job.out.join(format!("rank{rank}.bin"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}\njob output:\n{}", path.display(), job.output));
    Run::from_bytes(&bytes)
}

fn max_difference(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Two ranks at batch 8 against one process at batch 16 on the same samples: the
/// parameters within `tolerance`, the ranks' bit for bit equal, the histories (loss,
/// accuracy, validation, metrics) the same.
fn equivalent(case: &str, extra: &[&str], tolerance: f64, start: Option<&Path>) {
    let job = job(case, extra, start);
    assert!(job.status.success(), "{case}: {}", job.output);
    let (rank0, rank1) = (read_rank(&job, 0), read_rank(&job, 1));
    assert!(
        rank0 == rank1,
        "{case}: the ranks' parameters or histories differ"
    );
    let checkpoint = job.out.join("single.safetensors");
    let how = How {
        start,
        ..How::default()
    };
    let single = run_case(case, None, how, &checkpoint).unwrap();
    let params = max_difference(&rank0.params, &single.params);
    let history = max_difference(&rank0.history, &single.history);
    println!(
        "{case}: {} parameters after {} global batches, largest difference from one process {params:e}, \
         history {history:e}; job {:.1} s",
        single.params.len(),
        EPOCHS * TRAIN.div_ceil(2 * BATCH),
        job.seconds
    );
    assert!(
        params <= tolerance,
        "{case}: parameters differ by {params:e}"
    );
    assert!(
        history <= tolerance,
        "{case}: history differs by {history:e}"
    );
    // Rank 0's checkpoint is the one process's, and loads in one process.
    if case == "mlp_f64" {
        let (mut ranks, mut alone) = (Mlp::<f64>::new(0), Mlp::<f64>::new(1));
        ranks.load(job.out.join("best.safetensors")).unwrap();
        alone.load(&checkpoint).unwrap();
        let params: Vec<f64> = ranks.params().as_slice().to_vec();
        let difference = max_difference(&params, alone.params().as_slice());
        assert!(
            difference <= tolerance,
            "checkpoints differ by {difference:e}"
        );
    }
    let _ = std::fs::remove_dir_all(&job.out);
}

#[test]
fn an_mlp_on_two_ranks_steps_as_one_process_at_twice_the_batch() {
    equivalent("mlp_f64", &[], 1e-12, None);
    equivalent("mlp_f32", &[], 1e-5, None);
}

#[test]
fn a_cnn_with_dropout_draws_the_one_process_masks() {
    equivalent("cnn_f64", &[], 1e-12, None);
}

#[test]
fn an_lstm_with_dropout_on_two_ranks_steps_as_one_process() {
    equivalent("lstm_f64", &[], 1e-12, None);
}

#[test]
fn a_two_output_model_on_two_ranks_reports_each_output_as_one_process() {
    equivalent("heads_f64", &[], 1e-12, None);
}

#[test]
fn accumulated_micro_batches_on_two_ranks_step_as_one_process() {
    equivalent("mlp_f64_accumulate", &[], 1e-12, None);
}

/// A two-rank run whose rank 1 fails after rank 0 backed it up in the middle of an
/// epoch, started again, ends with the parameters of an uninterrupted two-rank run, bit
/// for bit, and its history (whose sums add in another order) to rounding.
#[test]
fn a_failed_data_parallel_run_resumes_from_rank_0s_backup() {
    let failed = job("resume_fail", &[], None);
    assert!(!failed.status.success(), "{}", failed.output);
    assert!(
        failed.out.join("backup.safetensors").exists(),
        "{}",
        failed.output
    );
    let resumed = job_in("resume", &[], None, failed.out.clone());
    assert!(resumed.status.success(), "{}", resumed.output);
    assert!(
        !resumed.out.join("backup.safetensors").exists(),
        "a finished run removes it"
    );
    let whole = job("resume", &[], None);
    assert!(whole.status.success(), "{}", whole.output);
    for rank in 0..2 {
        let (resumed, whole) = (read_rank(&resumed, rank), read_rank(&whole, rank));
        assert!(
            resumed.params == whole.params,
            "rank {rank}: the parameters differ"
        );
        let history = max_difference(&resumed.history, &whole.history);
        assert!(
            history <= 1e-12,
            "rank {rank}: the history differs by {history:e}"
        );
    }
    let _ = std::fs::remove_dir_all(&resumed.out);
    let _ = std::fs::remove_dir_all(&whole.out);
}

/// A loop of one's own on two ranks (`set_batch_part`, `value_and_grad`,
/// `all_reduce_gradients`, `apply_gradients`) takes `fit`'s one-process steps.
#[test]
fn a_custom_loop_on_two_ranks_steps_as_one_process() {
    let job = job("cnn_custom", &[], None);
    assert!(job.status.success(), "{}", job.output);
    let (rank0, rank1) = (read_rank(&job, 0), read_rank(&job, 1));
    assert!(rank0 == rank1, "the ranks' parameters differ");
    let checkpoint = job.out.join("single.safetensors");
    let single = run_case("cnn_f64", None, How::default(), &checkpoint).unwrap();
    let params = max_difference(&rank0.params, &single.params);
    println!("cnn_custom: largest difference from one process {params:e}");
    assert!(params <= 1e-12, "parameters differ by {params:e}");
    let _ = std::fs::remove_dir_all(&job.out);
}

#[test]
fn over_tcp_as_between_machines() {
    equivalent("mlp_f64_tcp", &["--mca", "btl", "tcp,self"], 1e-12, None);
}

#[test]
fn a_rank_that_fails_ends_the_job_with_its_message() {
    for (case, says) in [
        ("fail", "rank 1 of 2 failed: rank 1 gives up on purpose"),
        ("panic", "rank 1 panics on purpose"),
    ] {
        let job = job(case, &[], None);
        println!("{case}: the job ended in {:.1} s", job.seconds);
        assert!(!job.status.success(), "{case}: {}", job.output);
        assert!(job.output.contains(says), "{case}: {}", job.output);
        assert!(job.seconds < 60.0, "{case}: {:.1} s", job.seconds);
        let _ = std::fs::remove_dir_all(&job.out);
    }
}

#[test]
fn ranks_that_disagree_all_return_the_error_before_training() {
    for (case, on) in [
        ("disagree", "seed (1 rank(s) differ from rank 0)"),
        (
            "disagree_settings",
            "the optimiser's learning rate (1 rank(s) differ from rank 0)",
        ),
        (
            "uneven",
            "the number of training samples (1 rank(s) differ from rank 0), the training features",
        ),
    ] {
        let job = job(case, &[], None);
        assert!(job.status.success(), "{}", job.output);
        for rank in 0..2 {
            let said = format!(
                "rank {rank} returned: data-parallel training: the 2 ranks disagree on {on}"
            );
            assert!(job.output.contains(&said), "{case}: {}", job.output);
        }
        assert!(!job.out.join("rank0.bin").exists());
        let _ = std::fs::remove_dir_all(&job.out);
    }
}

/// A model saved by one process starts training on every rank, as in one process.
#[test]
fn a_model_saved_by_one_process_trains_on_the_ranks() {
    let dir = std::env::temp_dir().join(format!("kiln-dp-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let start = dir.join("start.safetensors");
    Mlp::<f64>::new(42).save(&start).unwrap();
    equivalent("mlp_f64", &[], 1e-12, Some(&start));
    let _ = std::fs::remove_dir_all(&dir);
}
