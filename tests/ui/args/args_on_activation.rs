// Arguments to a layer that takes none.
kiln::model! {
    pub struct Net {
        input: [10],
        Dense(4), Relu(0.1),
    }
}

fn main() {}
