// A node that does not say what it reads.
kiln::model! {
    pub struct Net { inputs: { x: [4] }, h >> Dense(4), outputs: { y: h >> Dense(1) } }
}

fn main() {}
