// An input that no node reads.
kiln::model! {
    pub struct Net { inputs: { x: [4], unused: [3] }, outputs: { y: x >> Dense(1) } }
}

fn main() {}
