// A model used as a layer gives another shape than the use states.
kiln::model! {
    pub struct Encoder {
        input: [6],
        fc: Dense(4), Relu,
    }
}

kiln::model! {
    pub struct Net {
        input: [6],
        enc: use Encoder -> [5],
        head: Dense(2),
    }
}

fn main() {}
