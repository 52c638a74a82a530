//! A sequence task that needs memory: count the ones in a sequence of 20 random bits.
//! The bits arrive one per step, so the LSTM has to keep a running count in its cell
//! state; the last hidden state is classified into 21 possible counts.
//!
//! ```text
//! cargo run --release --example sequence_sum
//! ```

use std::time::Instant;

use kiln::data::Dataset;
use kiln::prelude::*;

const STEPS: usize = 20;

kiln::model! {
    /// Counts the ones in a bit sequence.
    pub struct BitCounter {
        input: [20, 1],
        lstm: Lstm(32),
        LastStep,
        out: Dense(21),
    }
}

/// `n` sequences of random bits and their counts of ones.
fn bit_sequences(n: usize, seed: u64) -> Result<Dataset<f32, Shape2<STEPS, 1>>, Error> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut features = Vec::with_capacity(n * STEPS);
    let mut counts = Vec::with_capacity(n);
    for _ in 0..n {
        let mut ones = 0;
        for _ in 0..STEPS {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bit = (state >> 63) as usize;
            ones += bit;
            features.push(bit as f32);
        }
        counts.push(ones);
    }
    Dataset::new(features, counts, Some(STEPS + 1))
}

fn main() -> Result<(), Error> {
    let train = bit_sequences(8000, 1)?;
    let test = bit_sequences(2000, 2)?;
    let mut model = BitCounter::<f32>::new(0);
    println!("{}\n", BitCounter::<f32>::summary());
    let epochs = 20;
    let config = FitConfig::new(epochs, 32)
        .validation_split(0.1)
        .schedule(CosineAnnealing {
            t_max: epochs,
            eta_min: 0.0,
        });
    let started = Instant::now();
    let history = model.fit(
        &train,
        None,
        &CrossEntropy::default(),
        &mut Adam::new(5e-3),
        &config,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let trained = (train.len() as f64 * 0.9).round() * history.epochs.len() as f64;
    let scored = model.evaluate(&test, &CrossEntropy::default(), 500)?;
    println!(
        "\n{} epochs in {seconds:.1} s ({:.0} training samples/s); test loss {:.4}, test accuracy {:.2} %",
        history.epochs.len(),
        trained / seconds,
        scored.loss,
        100.0 * scored.accuracy.unwrap_or(0.0)
    );
    Ok(())
}
