//! Recurrent networks learn a task that needs memory: counting the ones in a bit
//! sequence fed one bit per step (the `sequence_sum` example, smaller).

use kiln::data::Dataset;
use kiln::prelude::*;

kiln::model! {
    struct LstmCounter { input: [10, 1], lstm: Lstm(16), LastStep, out: Dense(11) }
}
kiln::model! {
    struct GruCounter { input: [10, 1], gru: Gru(16), LastStep, out: Dense(11) }
}

fn bit_sequences(n: usize, seed: u64) -> Dataset<f32, Shape2<10, 1>> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut features = Vec::new();
    let mut counts = Vec::new();
    for _ in 0..n {
        let mut ones = 0;
        for _ in 0..10 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bit = (state >> 63) as usize;
            ones += bit;
            features.push(bit as f32);
        }
        counts.push(ones);
    }
    Dataset::new(features, counts, Some(11)).unwrap()
}

fn accuracy<M: Model<f32, Input = Shape2<10, 1>> + Send>(mut model: M) -> f64 {
    let (train, test) = (bit_sequences(3000, 1), bit_sequences(1000, 2));
    let config = FitConfig::new(15, 32)
        .schedule(CosineAnnealing {
            t_max: 15,
            eta_min: 0.0,
        })
        .progress(Progress::Silent);
    model
        .fit(
            &train,
            None,
            &CrossEntropy::default(),
            &mut Adam::new(1e-2),
            &config,
        )
        .unwrap();
    model
        .evaluate(&test, &CrossEntropy::default(), 500)
        .unwrap()
        .accuracy
        .unwrap()
}

#[test]
fn lstm_and_gru_learn_to_count() {
    let lstm = accuracy(LstmCounter::<f32>::new(0));
    let gru = accuracy(GruCounter::<f32>::new(0));
    println!("counting ones in 10 bits: LSTM {lstm:.4}, GRU {gru:.4}");
    assert!(lstm >= 0.95, "LSTM accuracy {lstm}");
    assert!(gru >= 0.95, "GRU accuracy {gru}");
}
