// Attention heads that do not divide the model width.
kiln::model! {
    pub struct Net {
        input: [16],
        tok: Embedding(vocab = 100, dim = 30),
        attn: MultiHeadAttention(heads = 4),
    }
}

fn main() {}
