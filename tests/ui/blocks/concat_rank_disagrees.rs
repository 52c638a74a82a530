// Concatenated branches must give outputs of one rank.
kiln::model! {
    pub struct Net {
        input: [2, 3, 3],
        both: Concat { image: {}, flat: { Flatten } },
        GlobalAvgPool,
    }
}

fn main() {}
