// A keyword the block does not have.
kiln::model! {
    block Stage(width) { Dense(width), Relu }
    pub struct Net {
        input: [4],
        s: Stage(widht = 8),
    }
}

fn main() {}
