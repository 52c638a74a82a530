// Independent mistakes are all reported in one compile.
kiln::model! {
    pub struct Net {
        input: [1, 28, 28],
        fc1: Dense(128), Rleu,
        Dropout(2.0),
        fc1: Dense(10),
    }
}

fn main() {}
