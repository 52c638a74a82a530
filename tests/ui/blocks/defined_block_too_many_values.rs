// More values than the block has parameters.
kiln::model! {
    block Stage(width) { Dense(width), Relu }
    pub struct Net {
        input: [4],
        s: Stage(8, 2),
    }
}

fn main() {}
