// An embedding with a width of 0.
kiln::model! {
    pub struct Net { input: [3], Embedding(vocab = 10, dim = 0), Flatten, Dense(1) }
}

fn main() {}
