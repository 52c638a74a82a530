// An output that is an input under another name.
kiln::model! {
    pub struct Net { inputs: { x: [4], z: [2] }, outputs: { y: x, w: z >> Dense(1) } }
}

fn main() {}
