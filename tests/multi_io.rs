//! Models with several named inputs and outputs.

use kiln::prelude::*;

kiln::model! {
    /// Two inputs, one merged trunk, two heads.
    struct TwoHeads {
        inputs: { image: [2, 6, 6], meta: [3] },
        trunk: image >> { Conv2d(3, kernel = 3), Relu, Flatten },
        joined: Concat(trunk, meta) >> { Dense(8), Tanh },
        outputs: { digit: joined >> Dense(4), value: joined >> Dense(2) },
    }
}

#[test]
fn compiles() {
    println!("{}", TwoHeads::<f64>::summary());
}
