// A recurrent layer fed a flat vector instead of [steps, features].
kiln::model! {
    pub struct Net {
        input: [784],
        lstm: Lstm(64),
        LastStep,
        Dense(10),
    }
}

fn main() {}
