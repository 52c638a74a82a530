// Batch norm declared for other channels than it gets.
kiln::model! {
    pub struct Net {
        input: [1, 28, 28],
        conv: Conv2d(6, kernel = 5, padding = 2),
        bn: BatchNorm2d(16),
    }
}

fn main() {}
