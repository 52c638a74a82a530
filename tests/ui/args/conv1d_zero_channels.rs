// A 1-d convolution with no output channels.
kiln::model! {
    pub struct Net { input: [2, 16], Conv1d(0, kernel = 3), Flatten, Dense(1) }
}

fn main() {}
