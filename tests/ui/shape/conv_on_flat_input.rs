// A convolution fed a flat vector.
kiln::model! {
    pub struct Net {
        input: [784],
        conv: Conv2d(8, kernel = 3),
    }
}

fn main() {}
