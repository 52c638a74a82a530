// A decoder layer attends to a memory, which it must name.
kiln::model! {
    pub struct Net {
        inputs: { target: [4, 8] },
        decoded: target >> { TransformerDecoderLayer(heads = 2, ff = 16), Flatten },
        outputs: { y: decoded >> Dense(2) },
    }
}

fn main() {}
