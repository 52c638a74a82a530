// Feeding one model's output into a model that expects another shape is a type error.
use kiln::prelude::*;

kiln::model! { pub struct Encoder { input: [8], Dense(4), Tanh } }
kiln::model! { pub struct Head { input: [3], Dense(2) } }

fn main() {
    let encoder = Encoder::<f32>::new(0);
    let head = Head::<f32>::new(1);
    let features = encoder.forward(TensorRef::new(&[0.0; 8]).unwrap());
    let _ = head.forward(&features);
}
