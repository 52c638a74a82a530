// The generated methods of `Model` take a `Sealed`, which only kiln can make: not even
// through `__private` can a program call them.
use kiln::prelude::*;

kiln::model! { struct Net { input: [2], out: Dense(1) } }

fn main() {
    let mut net = Net::<f32>::new(0);
    let _ = net.state_mut(kiln::__private::Sealed(()));
}
