// A misspelt keyword argument.
kiln::model! {
    pub struct Net {
        input: [10],
        fc: Dense(4, bais = false),
    }
}

fn main() {}
