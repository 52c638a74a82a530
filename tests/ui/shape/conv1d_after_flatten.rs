// A 1-d convolution after the layer that flattened its input.
kiln::model! {
    pub struct Net { input: [2, 16], Flatten, conv: Conv1d(4, kernel = 3), Dense(1) }
}

fn main() {}
