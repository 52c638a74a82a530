// A recurrent layer with no hidden units.
kiln::model! {
    pub struct Net { input: [5, 3], Lstm(0), LastStep, Dense(1) }
}

fn main() {}
