// A convolution without its kernel size.
kiln::model! {
    pub struct Net {
        input: [3, 32, 32],
        conv: Conv2d(8),
    }
}

fn main() {}
