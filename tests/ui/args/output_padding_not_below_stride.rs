// output_padding as large as the stride: it would choose a size no stride-2
// convolution maps back onto this input.
kiln::model! {
    pub struct Net {
        input: [8, 7, 7],
        up: ConvTranspose2d(4, kernel = 3, stride = 2, padding = 1, output_padding = 2),
    }
}

fn main() {}
