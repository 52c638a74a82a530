// Residual without its braces.
kiln::model! {
    pub struct Net {
        input: [10],
        Residual,
    }
}

fn main() {}
