// A dense layer with no units.
kiln::model! {
    pub struct Net {
        input: [10],
        fc: Dense(0),
    }
}

fn main() {}
