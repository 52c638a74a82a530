// A recurrent layer after a named `LastStep` kept one row: the hint names that layer.
kiln::model! {
    pub struct Net {
        input: [20, 8],
        lstm1: Lstm(16),
        last: LastStep,
        lstm2: Lstm(16),
    }
}

fn main() {}
