// The inputs of a graph model in brackets instead of braces.
kiln::model! {
    pub struct Net { inputs: [4], outputs: { y: x >> Dense(1) } }
}

fn main() {}
