// Two definitions of one block.
kiln::model! {
    block Stage { Conv2d(4, kernel = 3, padding = 1), Relu }
    block Stage { Conv2d(8, kernel = 3, padding = 1), Relu }
    pub struct Net {
        input: [1, 8, 8],
        s: Stage,
    }
}

fn main() {}
