// A transposed convolution over a [steps, features] input.
kiln::model! {
    pub struct Net {
        input: [10, 16],
        up: ConvTranspose2d(4, kernel = 2, stride = 2),
    }
}

fn main() {}
