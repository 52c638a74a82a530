// Dense fed a rank-3 tensor.
kiln::model! {
    pub struct Net {
        input: [16, 5, 5],
        fc1: Dense(120),
    }
}

fn main() {}
