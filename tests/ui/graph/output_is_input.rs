// An output that is an input, with no layer.
kiln::model! {
    pub struct Net { inputs: { x: [4], z: [2] }, outputs: { x, y: z >> Dense(1) } }
}

fn main() {}
