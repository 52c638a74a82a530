// A residual block whose layers change the shape.
kiln::model! {
    pub struct Net {
        input: [64],
        block: Residual { Dense(32), Relu },
        Dense(10),
    }
}

fn main() {}
