// Attention over more steps than kiln takes.
kiln::model! {
    pub struct Net { input: [33554432, 2], attn: MultiHeadAttention(heads = 1), Flatten, Dense(2) }
}

fn main() {}
