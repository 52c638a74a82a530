// 2-d batch norm on a vector.
kiln::model! {
    pub struct Net {
        input: [32],
        bn: BatchNorm2d,
    }
}

fn main() {}
