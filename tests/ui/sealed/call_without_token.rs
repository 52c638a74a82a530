// A model's state is reached through the provided methods only: the generated accessor
// needs the token that kiln alone holds.
use kiln::prelude::*;

kiln::model! { struct Net { input: [2], out: Dense(1) } }

fn main() {
    let net = Net::<f32>::new(0);
    let _ = net.state();
}
