// Global pooling on a vector.
kiln::model! {
    pub struct Net {
        input: [32],
        GlobalAvgPool,
    }
}

fn main() {}
