// A 2-d layer after `Flatten` made the image a vector: the hint names `Flatten`.
kiln::model! {
    pub struct Net {
        input: [1, 28, 28],
        conv1: Conv2d(6, kernel = 5), Relu,
        Flatten,
        fc: Dense(120),
        conv2: Conv2d(16, kernel = 5),
    }
}

fn main() {}
