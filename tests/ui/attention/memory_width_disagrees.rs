// Cross-attention whose keys (from a memory 6 wide) and queries (8 wide) disagree.
kiln::model! {
    pub struct Net {
        inputs: { source: [5, 6], target: [4, 8] },
        decoded: target >> { MultiHeadAttention(heads = 2, memory = source), Flatten },
        outputs: { y: decoded >> Dense(2) },
    }
}

fn main() {}
