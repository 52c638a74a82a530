// A model used as a layer takes another shape than the one that reaches it.
kiln::model! {
    pub struct Encoder {
        input: [6],
        fc: Dense(4), Relu,
    }
}

kiln::model! {
    pub struct Net {
        input: [7],
        enc: use Encoder -> [4],
        head: Dense(2),
    }
}

fn main() {}
