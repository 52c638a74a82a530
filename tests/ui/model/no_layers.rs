// A model with an input and nothing else.
kiln::model! {
    pub struct Net {
        input: [10],
    }
}

fn main() {}
