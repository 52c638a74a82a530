// A layer whose output holds more values per sample than kiln takes.
kiln::model! {
    pub struct Net { input: [1024, 1024], up: Dense(16777216), Flatten, Dense(10) }
}

fn main() {}
