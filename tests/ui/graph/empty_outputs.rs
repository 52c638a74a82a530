// A graph model with an empty list of outputs.
kiln::model! {
    pub struct Net { inputs: { x: [4] }, h: x >> Dense(4), outputs: {} }
}

fn main() {}
