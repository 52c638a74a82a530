// Adding nodes of different shapes.
kiln::model! {
    pub struct Net { inputs: { a: [4], b: [5] }, h: Add(a, b) >> Dense(4), outputs: { y: h >> Dense(1) } }
}

fn main() {}
