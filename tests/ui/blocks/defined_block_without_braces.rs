// A block definition without its layer list.
kiln::model! {
    block Stage(width);
    pub struct Net {
        input: [4],
        s: Stage(8),
    }
}

fn main() {}
