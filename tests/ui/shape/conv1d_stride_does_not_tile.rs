// A 1-d stride that leaves the last positions of the input unused.
kiln::model! {
    pub struct Net { input: [2, 14], conv: Conv1d(4, kernel = 3, stride = 3), Flatten, Dense(1) }
}

fn main() {}
