// A transposed convolution with no output channels.
kiln::model! {
    pub struct Net {
        input: [1, 8, 8],
        up: ConvTranspose2d(0, kernel = 2, stride = 2),
    }
}

fn main() {}
