// A 1-d convolution whose kernel and dilation are zero.
kiln::model! {
    pub struct Net { input: [2, 16], conv: Conv1d(4, kernel = 0, dilation = 0), Flatten, Dense(1) }
}

fn main() {}
