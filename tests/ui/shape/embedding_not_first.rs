// An embedding after another layer.
kiln::model! {
    pub struct Net {
        input: [16],
        Dense(16),
        tok: Embedding(vocab = 100, dim = 32),
    }
}

fn main() {}
