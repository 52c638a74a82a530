// A dilated, padded 1-d kernel longer than its input.
kiln::model! {
    pub struct Net { input: [2, 4], conv: Conv1d(4, kernel = 3, padding = 1, dilation = 3), Flatten, Dense(1) }
}

fn main() {}
