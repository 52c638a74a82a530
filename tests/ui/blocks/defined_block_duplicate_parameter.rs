// A block with two parameters of one name.
kiln::model! {
    block Stage(channels, channels) { Conv2d(channels, kernel = 3, padding = 1), Relu }
    pub struct Net {
        input: [1, 8, 8],
        s: Stage(4, 4),
    }
}

fn main() {}
