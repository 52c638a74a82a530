// Concatenated branches must agree on every axis but the channels.
kiln::model! {
    pub struct Net {
        input: [1, 8, 8],
        mixed: Concat {
            b1: { Conv2d(2, kernel = 1), Relu },
            b3: { Conv2d(4, kernel = 3), Relu },
        },
    }
}

fn main() {}
