//! Fits y = 3x - 2 from 200 noisy samples with one dense unit, mean squared error and
//! plain SGD, then prints the recovered slope and intercept.
//!
//! ```text
//! cargo run --release --example linear_regression
//! ```

use kiln::prelude::*;

kiln::model! {
    /// y = w x + b.
    pub struct Line { input: [1], fit: Dense(1) }
}

fn main() -> Result<(), Error> {
    // Deterministic "noise": a small sine of the index, mean zero over the samples.
    let xs: Vec<f32> = (0..200).map(|i| i as f32 / 100.0 - 1.0).collect();
    let ys: Vec<f32> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| 3.0 * x - 2.0 + 0.01 * (i as f32 * 1.7).sin())
        .collect();
    let x = TensorRef::<f32, Shape1<1>>::new(&xs)?;

    let mut model = Line::<f32>::new(0);
    println!("{}", Line::<f32>::summary());
    let mut optimizer = Sgd::new(0.1);
    for epoch in 0..=500 {
        let loss = model.train_step(x, &ys[..], &Mse::default(), &mut optimizer)?;
        if epoch % 100 == 0 {
            println!("epoch {epoch:>3}  mse {loss:.6}");
        }
    }
    let w = model.params().get("fit.weight").expect("named parameter")[0];
    let b = model.params().get("fit.bias").expect("named parameter")[0];
    println!(
        "learned y = {w:.4} x {} {:.4}  (true: y = 3x - 2)",
        if b < 0.0 { "-" } else { "+" },
        b.abs()
    );
    Ok(())
}
