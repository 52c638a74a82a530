// Cross-attention in a model with one input: there is no other node to read.
kiln::model! {
    pub struct Net { input: [4, 8], attn: MultiHeadAttention(heads = 2, memory = encoded), Flatten, Dense(2) }
}

fn main() {}
