// A decoder layer attending to a memory narrower than its target.
kiln::model! {
    pub struct Net {
        inputs: { source: [6, 4], target: [4, 8] },
        decoded: target >> { TransformerDecoderLayer(heads = 2, ff = 16, memory = source), Flatten },
        outputs: { y: decoded >> Dense(2) },
    }
}

fn main() {}
