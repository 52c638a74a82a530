// A parameter without a default after one with a default.
kiln::model! {
    block Stage(stride = 1, channels) { Conv2d(channels, kernel = 3, stride = stride, padding = 1) }
    pub struct Net {
        input: [1, 8, 8],
        s: Stage(channels = 4),
    }
}

fn main() {}
