// A layer of the user's own, written without `use`: the message says how to use it.
pub struct Gate;

kiln::model! {
    pub struct Net {
        input: [4],
        gate: Gate,
        Dense(2),
    }
}

fn main() {}
