// A padding no image needs: integer arguments are at most 16777216.
kiln::model! {
    pub struct Net { input: [1, 28, 28], conv: Conv2d(16, kernel = 3, padding = 42949672961), Flatten, Dense(10) }
}

fn main() {}
