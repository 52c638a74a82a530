// Dense without its size.
kiln::model! {
    pub struct Net {
        input: [10],
        fc: Dense,
    }
}

fn main() {}
