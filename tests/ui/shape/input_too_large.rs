// An input holding more values per sample than kiln takes.
kiln::model! {
    pub struct Net { input: [3, 65536, 65536], Flatten, Dense(10) }
}

fn main() {}
