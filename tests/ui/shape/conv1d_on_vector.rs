// A 1-d convolution on a vector input: the input should be [channels, length].
kiln::model! {
    pub struct Net { input: [16000], conv: Conv1d(4, kernel = 3), Flatten, Dense(1) }
}

fn main() {}
