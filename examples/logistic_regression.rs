//! Logistic regression on two Gaussian-like clusters: one dense unit trained with
//! binary cross-entropy on logits and Adam, then its accuracy and decision boundary.
//!
//! ```text
//! cargo run --release --example logistic_regression
//! ```

use kiln::prelude::*;

kiln::model! {
    /// Two features in, one logit out.
    pub struct Logistic { input: [2], out: Dense(1) }
}

/// Two clusters centred at (-1, -1) and (1, 1), spread by a fixed pseudo-random walk.
fn clusters(n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut unit = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut xs = Vec::with_capacity(2 * n);
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        let label = (i % 2) as f32;
        let centre = if label == 1.0 { 1.0 } else { -1.0 };
        xs.push(centre + 1.2 * unit());
        xs.push(centre + 1.2 * unit());
        ys.push(label);
    }
    (xs, ys)
}

fn main() -> Result<(), Error> {
    let (xs, ys) = clusters(400);
    let x = TensorRef::<f32, Shape1<2>>::new(&xs)?;
    let mut model = Logistic::<f32>::new(1);
    let mut optimizer = Adam::new(0.05);
    for epoch in 0..=200 {
        let loss = model.train_step(x, &ys[..], &BceWithLogits::default(), &mut optimizer)?;
        if epoch % 50 == 0 {
            println!("epoch {epoch:>3}  loss {loss:.4}");
        }
    }
    let logits = model.forward(x);
    let correct = logits
        .as_slice()
        .iter()
        .zip(&ys)
        .filter(|(logit, y)| (**logit > 0.0) == (**y == 1.0))
        .count();
    println!(
        "accuracy {:.1} % on {} points",
        100.0 * correct as f32 / ys.len() as f32,
        ys.len()
    );
    let w = model.params().get("out.weight").expect("named parameter");
    let b = model.params().get("out.bias").expect("named parameter")[0];
    println!(
        "decision boundary: {:.3} x0 + {:.3} x1 {} {:.3} = 0",
        w[0],
        w[1],
        if b < 0.0 { "-" } else { "+" },
        b.abs()
    );
    Ok(())
}
