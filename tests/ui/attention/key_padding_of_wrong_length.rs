// Key padding with one value per query step rather than per key.
kiln::model! {
    pub struct Net {
        inputs: { source: [6, 8], padding: [4], target: [4, 8] },
        decoded: target >> { MultiHeadAttention(heads = 2, memory = source, key_padding = padding), Flatten },
        outputs: { y: decoded >> Dense(2) },
    }
}

fn main() {}
