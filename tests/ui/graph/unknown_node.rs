// An output that reads a node that does not exist.
kiln::model! {
    pub struct Net { inputs: { x: [4] }, h: x >> Dense(4), outputs: { y: hidden >> Dense(1) } }
}

fn main() {}
