// A recurrent layer fed an image.
kiln::model! {
    pub struct Net {
        input: [1, 28, 28],
        gru: Gru(32),
    }
}

fn main() {}
