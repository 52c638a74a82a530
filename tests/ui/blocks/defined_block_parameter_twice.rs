// One parameter given positionally and by keyword.
kiln::model! {
    block Stage(width) { Dense(width), Relu }
    pub struct Net {
        input: [4],
        s: Stage(8, width = 8),
    }
}

fn main() {}
