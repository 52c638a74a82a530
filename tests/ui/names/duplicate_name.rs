// Two layers with one name.
kiln::model! {
    pub struct Net {
        input: [10],
        fc: Dense(8), Relu,
        fc: Dense(2),
    }
}

fn main() {}
