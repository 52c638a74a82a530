// More positional arguments than the layer takes.
kiln::model! {
    pub struct Net {
        input: [10],
        fc: Dense(4, false, 3),
    }
}

fn main() {}
