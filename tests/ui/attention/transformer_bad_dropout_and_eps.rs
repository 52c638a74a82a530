// A transformer layer's dropout outside [0, 1) and a negative eps, both reported.
kiln::model! {
    pub struct Net { input: [4, 8], enc: TransformerEncoderLayer(heads = 2, ff = 16, dropout = 1.5, eps = -1e-5), Flatten, Dense(2) }
}

fn main() {}
