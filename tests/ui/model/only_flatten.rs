// A model whose only layer renames the shape.
kiln::model! {
    pub struct Net {
        input: [2, 5],
        Flatten,
    }
}

fn main() {}
