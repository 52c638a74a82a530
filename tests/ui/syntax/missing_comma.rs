// Two layers without a comma between them.
kiln::model! {
    pub struct Net {
        input: [10],
        Dense(4) Relu,
    }
}

fn main() {}
