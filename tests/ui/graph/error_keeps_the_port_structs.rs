// A graph model with a mistake still declares its structs of inputs and outputs, so code
// that builds them reports only the mistake.
kiln::model! {
    pub struct Net {
        inputs: { x: [4], z: [2] },
        h: Concat(x, z) >> Dense(4),
        outputs: { y: h >> Dense(1), w: hidden >> Dense(2) },
    }
}

fn main() {
    let _ = NetInputs { x: 1, z: 2 };
    let _ = NetOutputs { y: 1.0, w: "w" };
}
