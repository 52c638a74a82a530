// A node whose layers do not follow `>>`.
kiln::model! {
    pub struct Net { inputs: { x: [4] }, h: x Dense(4), outputs: { y: h >> Dense(1) } }
}

fn main() {}
