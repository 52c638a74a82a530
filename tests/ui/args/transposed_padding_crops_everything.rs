// Padding that crops more than a transposed convolution produces.
kiln::model! {
    pub struct Net {
        input: [8, 2, 2],
        up: ConvTranspose2d(4, kernel = 2, padding = 2),
    }
}

fn main() {}
