// Two inputs with one name.
kiln::model! {
    pub struct Net { inputs: { x: [4], x: [2] }, outputs: { y: x >> Dense(1) } }
}

fn main() {}
