// A node whose layer has a name of its own.
kiln::model! {
    pub struct Net { inputs: { x: [4] }, h: x >> fc: Dense(4), outputs: { y: h >> Dense(1) } }
}

fn main() {}
