// A model whose only layer is an empty sequence passes its input on and computes nothing.
kiln::model! {
    pub struct Net {
        input: [3],
        skip: {},
    }
}

fn main() {}
