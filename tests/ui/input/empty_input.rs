// An input with no dimensions.
kiln::model! {
    pub struct Net {
        input: [],
        Dense(10),
    }
}

fn main() {}
