// Cross-attention to a node that is not defined before the one that reads it.
kiln::model! {
    pub struct Net {
        inputs: { source: [6, 8], target: [4, 8] },
        decoded: target >> { MultiHeadAttention(heads = 2, memory = encoded), Flatten },
        encoded: source >> Dense(8),
        outputs: { y: decoded >> Dense(2), z: encoded >> { Flatten, Dense(1) } },
    }
}

fn main() {}
