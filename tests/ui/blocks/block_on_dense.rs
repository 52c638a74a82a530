// Braces after a layer that is not a block.
kiln::model! {
    pub struct Net {
        input: [10],
        Dense(4) { Relu },
    }
}

fn main() {}
