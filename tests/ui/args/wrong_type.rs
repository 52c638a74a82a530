// A float where an integer is needed.
kiln::model! {
    pub struct Net {
        input: [10],
        fc: Dense(2.5),
    }
}

fn main() {}
