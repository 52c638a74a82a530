// A parameter without a default that the use does not give.
kiln::model! {
    block Stage(width, depth) { Dense(width), Relu }
    pub struct Net {
        input: [4],
        s: Stage(8),
    }
}

fn main() {}
