// A 1-d convolution given a 2-d kernel.
kiln::model! {
    pub struct Net { input: [2, 16], conv: Conv1d(4, kernel = (3, 3)), Flatten, Dense(1) }
}

fn main() {}
