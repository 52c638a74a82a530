// A stride of zero.
kiln::model! {
    pub struct Net {
        input: [3, 32, 32],
        conv: Conv2d(8, kernel = 3, stride = 0),
    }
}

fn main() {}
