// The same argument by position and by name.
kiln::model! {
    pub struct Net {
        input: [10],
        fc: Dense(4, units = 8),
    }
}

fn main() {}
