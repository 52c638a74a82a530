// A residual block with nothing inside.
kiln::model! {
    pub struct Net {
        input: [10],
        Residual {},
        Dense(2),
    }
}

fn main() {}
