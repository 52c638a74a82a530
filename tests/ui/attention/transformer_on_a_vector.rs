// A transformer layer reads a sequence, not a vector.
kiln::model! {
    pub struct Net { input: [16], enc: TransformerEncoderLayer(heads = 2, ff = 32), Dense(2) }
}

fn main() {}
