//! XOR, the function a single layer cannot learn: two inputs, a hidden tanh layer of
//! eight units, one logit out.
//!
//! ```text
//! cargo run --release --example xor
//! ```

use kiln::prelude::*;

kiln::model! {
    /// A two-layer perceptron.
    pub struct Xor { input: [2], hidden: Dense(8), Tanh, out: Dense(1) }
}

fn main() -> Result<(), Error> {
    let inputs = [0.0_f32, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
    let targets = [0.0_f32, 1.0, 1.0, 0.0];
    let x = TensorRef::<f32, Shape1<2>>::new(&inputs)?;
    let mut model = Xor::<f32>::new(7);
    println!("{}", Xor::<f32>::summary());
    let mut optimizer = Adam::new(0.05);
    for epoch in 0..=500 {
        let loss = model.train_step(x, &targets[..], &BceWithLogits::default(), &mut optimizer)?;
        if epoch % 100 == 0 {
            println!("epoch {epoch:>3}  loss {loss:.5}");
        }
    }
    let logits = model.forward(x);
    for (sample, logit) in inputs.chunks(2).zip(logits.as_slice()) {
        let p = 1.0 / (1.0 + (-logit).exp());
        println!("{} xor {} -> {p:.3}", sample[0], sample[1]);
    }
    Ok(())
}
