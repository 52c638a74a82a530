// An input of more dimensions than the runtime has shapes for.
kiln::model! {
    pub struct Net {
        input: [2, 3, 4, 5, 6],
        Flatten,
        Dense(10),
    }
}

fn main() {}
