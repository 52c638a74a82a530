// A node with the name of an input.
kiln::model! {
    pub struct Net { inputs: { x: [4] }, x: x >> Dense(4), outputs: { y: x >> Dense(1) } }
}

fn main() {}
