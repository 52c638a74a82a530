// A pooling stride that leaves part of the input unused.
kiln::model! {
    pub struct Net {
        input: [64, 11, 11],
        pool: MaxPool2d(2),
    }
}

fn main() {}
