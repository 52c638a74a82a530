// A merge that lists a node twice.
kiln::model! {
    pub struct Net { inputs: { x: [4] }, h: Add(x, x) >> Dense(4), outputs: { y: h >> Dense(1) } }
}

fn main() {}
