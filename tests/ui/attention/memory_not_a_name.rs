// A memory written as a number, not the name of a node.
kiln::model! {
    pub struct Net {
        inputs: { source: [6, 8], target: [4, 8] },
        decoded: target >> { MultiHeadAttention(heads = 2, memory = 3), Flatten },
        outputs: { y: decoded >> Dense(2), z: source >> { Flatten, Dense(1) } },
    }
}

fn main() {}
