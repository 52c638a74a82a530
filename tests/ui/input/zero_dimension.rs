// A zero dimension in the input.
kiln::model! {
    pub struct Net {
        input: [0, 28],
        Dense(10),
    }
}

fn main() {}
