// Concatenating sequences of different lengths.
kiln::model! {
    pub struct Net { inputs: { a: [10, 4], b: [12, 4] }, h: Concat(a, b) >> Lstm(8), outputs: { y: h >> { LastStep, Dense(1) } } }
}

fn main() {}
