// A misspelt use of a defined block is suggested its name.
kiln::model! {
    block Basic(width) { Dense(width), Relu }
    pub struct Net {
        input: [4],
        s: Basci(8),
    }
}

fn main() {}
