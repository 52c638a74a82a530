// Transpose swaps the two axes of a sequence, not three.
kiln::model! {
    pub struct Net { input: [1, 8, 8], swap: Transpose, Flatten, Dense(1) }
}

fn main() {}
