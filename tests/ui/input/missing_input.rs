// The input shape is missing.
kiln::model! {
    pub struct Net {
        fc1: Dense(10),
    }
}

fn main() {}
