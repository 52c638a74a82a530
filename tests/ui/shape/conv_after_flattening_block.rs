// A block that flattens: the hint names the `Flatten` inside it, not the block.
kiln::model! {
    pub struct Net {
        input: [2, 4, 4],
        head: Sequential { Flatten, Dense(8) },
        conv: Conv2d(4, kernel = 1),
    }
}

fn main() {}
