// An interpolation mode kiln does not have.
kiln::model! {
    pub struct Net {
        input: [1, 8, 8],
        up: Upsample(2, mode = bicubic),
    }
}

fn main() {}
