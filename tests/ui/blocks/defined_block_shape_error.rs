// A use whose input does not fit the block's layers: the error points into the
// definition and names the layer by its full path.
kiln::model! {
    block Down(channels) { conv: Conv2d(channels, kernel = 3, stride = 2, padding = 1), Relu }
    pub struct Net {
        input: [1, 8, 8],
        a: Down(4),
        Flatten,
        b: Down(8),
    }
}

fn main() {}
