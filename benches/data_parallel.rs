//! Data-parallel scaling on one machine, for T1 `mlp_small` and T2 `mlp_wide` (the
//! models, batch and optimiser of `benches/training.rs`: global batch 128, SGD 0.05):
//! the samples per second `fit` reaches in one process, and across the ranks of an
//! `mpirun` job, and the time of one all-reduce of the model's gradient buffer.
//!
//! `scripts/bench/data_parallel.py` builds this and runs it both ways in alternation
//! (one process with two threads, two ranks with one each). By hand:
//!
//! ```text
//! cargo bench --features mpi --bench data_parallel --no-run   # prints the binary
//! KILN_DP_BENCH=single RAYON_NUM_THREADS=2 target/release/deps/data_parallel-…
//! mpirun -np 2 -x KILN_DP_BENCH=ranks -x RAYON_NUM_THREADS=1 target/release/deps/data_parallel-…
//! ```
//!
//! Each prints one JSON line per workload (rank 0 only): the median epoch's samples
//! per second (of three epochs after a first, which warms up) and, with ranks, the
//! median of 30 all-reduces of the gradient buffer in milliseconds.

use std::time::Instant;

use kiln::data::Dataset;
use kiln::distributed::{Communicator, Mpi};
use kiln::prelude::*;

kiln::model! {
    struct MlpSmall { input: [784], fc1: Dense(128), Relu, fc2: Dense(10) }
}
kiln::model! {
    struct MlpWide { input: [784], fc1: Dense(1024), Relu, fc2: Dense(1024), Relu, fc3: Dense(10) }
}

/// Samples per step across all ranks.
const GLOBAL_BATCH: usize = 128;

/// `n` samples of 784 values in [0, 1) from a fixed xorshift stream, labels cycling.
fn synthetic(n: usize) -> Dataset<f32, Shape1<784>> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let features = (0..n * 784)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Dataset::new(features, (0..n).map(|i| (i * 7) % 10).collect(), Some(10)).unwrap()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn measure<M: Model<f32, Input = Shape1<784>> + Send>(
    name: &str,
    steps: usize,
    comm: Option<&Mpi>,
) {
    let ranks = comm.map_or(1, Communicator::size);
    let data = synthetic(GLOBAL_BATCH * steps);
    let mut model = M::with_seed(0);
    let mut config = FitConfig::new(4, GLOBAL_BATCH / ranks).progress(Progress::Silent);
    if let Some(comm) = comm {
        config = config.communicator(comm.clone());
    }
    let history = model
        .fit(
            &data,
            None,
            &CrossEntropy::default(),
            &mut Sgd::new(0.05),
            &config,
        )
        .unwrap();
    let seconds = median(history.epochs[1..].iter().map(|e| e.seconds).collect());
    let samples_per_s = data.len() as f64 / seconds;
    let mut allreduce_ms = f64::NAN;
    if let Some(comm) = comm {
        let send = vec![1.0_f32; M::SPEC.param_count];
        let mut recv = vec![0.0_f32; send.len()];
        let mut times = Vec::new();
        for round in 0..35 {
            comm.barrier().unwrap();
            let started = Instant::now();
            comm.all_reduce_sum_f32(&send, &mut recv).unwrap();
            if round >= 5 {
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        allreduce_ms = median(times);
    }
    if comm.is_none_or(|c| c.rank() == 0) {
        println!(
            "{{\"workload\": \"{name}\", \"ranks\": {ranks}, \"threads\": {}, \"params\": {}, \
             \"samples_per_s\": {samples_per_s:.1}, \"allreduce_ms\": {allreduce_ms:.4}}}",
            rayon::current_num_threads(),
            M::SPEC.param_count,
        );
    }
}

fn main() {
    let mode = std::env::var("KILN_DP_BENCH").unwrap_or_default();
    // `cargo bench` runs every bench target with `--bench`: this one runs only when
    // asked, under the script or by hand.
    let comm = match mode.as_str() {
        "single" => None,
        "ranks" => Some(Mpi::init().expect("MPI")),
        _ => {
            println!("data_parallel: set KILN_DP_BENCH=single or ranks (see the file's docs)");
            return;
        }
    };
    let only = std::env::var("KILN_DP_ONLY").unwrap_or_default();
    if only.is_empty() || only == "mlp_small" {
        measure::<MlpSmall<f32>>("mlp_small", 200, comm.as_ref());
    }
    if only.is_empty() || only == "mlp_wide" {
        measure::<MlpWide<f32>>("mlp_wide", 40, comm.as_ref());
    }
}
