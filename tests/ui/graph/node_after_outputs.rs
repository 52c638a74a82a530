// A node written after the outputs.
kiln::model! {
    pub struct Net { inputs: { x: [4] }, outputs: { y: x >> Dense(1) }, z: x >> Dense(2) }
}

fn main() {}
