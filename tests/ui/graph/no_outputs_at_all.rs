// A graph model that never lists its outputs.
kiln::model! {
    pub struct Net { inputs: { x: [4] }, h: x >> Dense(4) }
}

fn main() {}
