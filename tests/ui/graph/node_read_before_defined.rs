// A node that reads a node defined after it.
kiln::model! {
    pub struct Net { inputs: { x: [4] }, a: b >> Dense(4), b: x >> Dense(4), outputs: { y: a >> Dense(1) } }
}

fn main() {}
