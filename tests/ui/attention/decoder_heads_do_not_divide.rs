// A decoder layer whose heads do not divide the model width: the attention inside it
// reports, at the layer as written.
kiln::model! {
    pub struct Net {
        inputs: { source: [6, 8], target: [4, 8] },
        decoded: target >> { TransformerDecoderLayer(heads = 3, ff = 16, memory = source), Flatten },
        outputs: { y: decoded >> Dense(2) },
    }
}

fn main() {}
