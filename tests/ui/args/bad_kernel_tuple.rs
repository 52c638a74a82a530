// A kernel that is not an integer or a pair.
kiln::model! {
    pub struct Net {
        input: [3, 32, 32],
        conv: Conv2d(8, kernel = (3, 3, 3)),
    }
}

fn main() {}
