// A merge that does not exist.
kiln::model! {
    pub struct Net { inputs: { x: [4], z: [4] }, h: Stack(x, z) >> Dense(4), outputs: { y: h >> Dense(1) } }
}

fn main() {}
