// Upsampling needs an image; Flatten made a vector of it.
kiln::model! {
    pub struct Net {
        input: [4, 7, 7],
        Flatten,
        up: Upsample(2),
    }
}

fn main() {}
