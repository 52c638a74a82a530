// An embedding fed vectors instead of token ids.
kiln::model! {
    pub struct Net {
        input: [16, 4],
        tok: Embedding(vocab = 100, dim = 32),
    }
}

fn main() {}
