// A merge of one branch merges nothing.
kiln::model! {
    pub struct Net {
        input: [3],
        gate: Mul { only: Dense(3) },
    }
}

fn main() {}
