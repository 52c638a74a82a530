// A kernel larger than its input.
kiln::model! {
    pub struct Net {
        input: [1, 28, 28],
        conv1: Conv2d(6, kernel = 5), Relu,
        MaxPool2d(2),
        conv2: Conv2d(16, kernel = 5), Relu,
        MaxPool2d(2),
        conv3: Conv2d(32, kernel = 5),
    }
}

fn main() {}
