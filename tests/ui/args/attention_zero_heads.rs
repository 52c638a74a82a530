// Attention with no heads.
kiln::model! {
    pub struct Net { input: [4, 8], MultiHeadAttention(heads = 0), Flatten, Dense(1) }
}

fn main() {}
