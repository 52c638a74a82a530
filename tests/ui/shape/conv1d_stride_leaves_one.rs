// A 1-d stride that leaves the last position of the input unused.
kiln::model! {
    pub struct Net { input: [2, 10], conv: Conv1d(4, kernel = 3, stride = 2), Flatten, Dense(1) }
}

fn main() {}
