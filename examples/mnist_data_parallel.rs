//! `mnist_mlp`'s network trained data-parallel on MPI: every rank holds the model,
//! trains on its part of each global batch of 32, and the gradients are summed across
//! ranks before every update, so two ranks take the steps `mnist_mlp` takes alone.
//!
//! ```text
//! cargo build --release --features mpi --example mnist_data_parallel
//! RAYON_NUM_THREADS=1 mpirun -np 2 target/release/examples/mnist_data_parallel \
//!     --data ../shared/data/mnist
//! ```
//!
//! (As root, `mpirun --allow-run-as-root`; on several machines, `--hostfile hosts`:
//! see docs/distributed.md.) Without `mpirun` it trains alone, as one rank. With no
//! MNIST it trains on the 8x8 digits that ship with kiln. Rank 0 prints the progress
//! and the test accuracy and writes the best model to `--out` (default
//! `target/mnist_data_parallel`).

mod common;

use std::time::Instant;

use kiln::data::Dataset;
use kiln::distributed::{Communicator, Mpi};
use kiln::prelude::*;

kiln::model! {
    /// The network for 28x28 MNIST digits.
    pub struct MnistMlp {
        input: [784],
        fc1: Dense(128), Relu,
        Dropout(0.2),
        fc2: Dense(10),
    }
}

kiln::model! {
    /// The same network for the 8x8 digits that ship with kiln.
    pub struct DigitsMlp {
        input: [64],
        fc1: Dense(128), Relu,
        Dropout(0.2),
        fc2: Dense(10),
    }
}

/// Samples per step across all ranks: `mnist_mlp`'s batch.
const GLOBAL_BATCH: usize = 32;

fn main() {
    let comm = match Mpi::init() {
        Ok(comm) => comm,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    common::main_with("mnist_data_parallel", |args| match &args.data {
        Some(dir) => {
            let (train, test) = kiln::data::read_mnist::<f32, Shape1<784>>(dir)?;
            let model = MnistMlp::<f32>::new(0);
            train_on_ranks(
                &comm,
                model,
                train,
                test,
                args.epochs.unwrap_or(5),
                &args.out,
            )
        }
        None => {
            let (train, test) = common::shipped_digits::<Shape1<64>>()?;
            let model = DigitsMlp::<f32>::new(0);
            train_on_ranks(
                &comm,
                model,
                train,
                test,
                args.epochs.unwrap_or(40),
                &args.out,
            )
        }
    });
}

fn train_on_ranks<M: Model<f32> + Send>(
    comm: &Mpi,
    mut model: M,
    train: Dataset<f32, M::Input>,
    test: Dataset<f32, M::Input>,
    epochs: usize,
    out: &std::path::Path,
) -> Result<(), Error> {
    let (rank, ranks) = (comm.rank(), comm.size());
    if !GLOBAL_BATCH.is_multiple_of(ranks) {
        return Err(Error::Distributed(format!(
            "{ranks} ranks cannot share batches of {GLOBAL_BATCH} evenly"
        )));
    }
    if rank == 0 {
        println!(
            "{ranks} rank(s), {} samples each per step; {} training and {} test samples",
            GLOBAL_BATCH / ranks,
            train.len(),
            test.len()
        );
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, &e))?;
    }
    // `mnist_mlp`'s settings, with the batch shared out and the communicator.
    let config = FitConfig::new(epochs, GLOBAL_BATCH / ranks)
        .seed(1)
        .validation_split(0.1)
        .early_stopping(EarlyStopping::new(Monitor::ValLoss, 3))
        .checkpoint(out.join("best.safetensors"), Monitor::ValLoss)
        .communicator(comm.clone());
    let started = Instant::now();
    let history = model.fit(
        &train,
        None,
        &CrossEntropy::default(),
        &mut Adam::new(1e-3),
        &config,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    // Every rank holds the same parameters now: rank 0 scores the test set.
    if rank == 0 {
        let scored = model.evaluate(&test, &CrossEntropy::default(), 1000)?;
        println!(
            "\n{} epochs in {seconds:.1} s on {ranks} rank(s); test loss {:.4}, test accuracy {:.2} %",
            history.epochs.len(),
            scored.loss,
            100.0 * scored.accuracy.unwrap_or(0.0)
        );
        println!("wrote {}", out.join("best.safetensors").display());
    }
    Ok(())
}
