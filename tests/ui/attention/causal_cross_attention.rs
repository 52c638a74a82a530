// A causal mask on cross-attention.
kiln::model! {
    pub struct Net {
        inputs: { source: [6, 8], target: [4, 8] },
        decoded: target >> { MultiHeadAttention(heads = 2, causal = true, memory = source), Flatten },
        outputs: { y: decoded >> Dense(2) },
    }
}

fn main() {}
