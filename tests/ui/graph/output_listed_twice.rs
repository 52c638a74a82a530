// An output listed twice.
kiln::model! {
    pub struct Net { inputs: { x: [4] }, h: x >> Dense(4), outputs: { h, h } }
}

fn main() {}
