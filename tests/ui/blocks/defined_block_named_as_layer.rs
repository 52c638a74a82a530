// A defined block may not take a built-in layer's name.
kiln::model! {
    block Dense(units) { Relu }
    pub struct Net {
        input: [4],
        fc: Dense(3),
    }
}

fn main() {}
