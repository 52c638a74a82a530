// A dropout probability outside [0, 1).
kiln::model! {
    pub struct Net {
        input: [10],
        Dense(4), Dropout(1.5),
    }
}

fn main() {}
