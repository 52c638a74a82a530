// A 1-d convolution fed an image.
kiln::model! {
    pub struct Net { input: [1, 28, 28], conv: Conv1d(4, kernel = 3), Flatten, Dense(1) }
}

fn main() {}
