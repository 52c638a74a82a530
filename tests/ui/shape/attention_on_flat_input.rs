// Attention fed a flat vector.
kiln::model! {
    pub struct Net {
        input: [64],
        attn: MultiHeadAttention(heads = 4),
    }
}

fn main() {}
