// A graph model with an empty list of inputs.
kiln::model! {
    pub struct Net { inputs: {}, outputs: { y: x >> Dense(1) } }
}

fn main() {}
