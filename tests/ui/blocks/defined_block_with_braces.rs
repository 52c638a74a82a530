// A defined block's layers are in its definition, not at its use.
kiln::model! {
    block Stage { Dense(4), Relu }
    pub struct Net {
        input: [4],
        s: Stage { Dense(2) },
    }
}

fn main() {}
