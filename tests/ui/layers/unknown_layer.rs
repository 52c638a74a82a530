// A misspelt layer gets a suggestion.
kiln::model! {
    pub struct Net {
        input: [10],
        Dense(10), Relu, Dens(2),
    }
}

fn main() {}
