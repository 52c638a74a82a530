// A node that nothing reads and that is no output.
kiln::model! {
    pub struct Net { inputs: { x: [4] }, spare: x >> Dense(4), outputs: { y: x >> Dense(1) } }
}

fn main() {}
