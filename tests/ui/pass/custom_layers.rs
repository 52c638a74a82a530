// User layers anywhere a layer goes: first, in branches, unnamed, with a computed
// const argument; the generated code compiles without a warning.
#![deny(warnings)]

use kiln::custom::{Backward, Forward, Layer};

/// Scales by two; takes `[N]`.
pub struct Double<const N: usize>;

impl<const N: usize> Layer for Double<N> {
    const INPUT: &'static [usize] = &[N];
    const OUTPUT: &'static [usize] = &[N];

    fn forward<T: kiln::Float>(io: Forward<'_, T>) {
        for (y, &x) in io.output.iter_mut().zip(io.input) {
            *y = x + x;
        }
    }

    fn backward<T: kiln::Float>(io: Backward<'_, T>) {
        if let Some(dx) = io.grad_input {
            for (d, &g) in dx.iter_mut().zip(io.grad_output) {
                *d += g + g;
            }
        }
    }
}

kiln::model! {
    pub struct Branches {
        input: [4],
        use Double<{ 2 * 2 }>,
        mixed: Concat {
            a: { use Double<4>, Dense(3) },
            b: { Dense(5), twice: use Double<5> },
        },
        sum: Add { main: { use Double<8> }, skip: {} },
        head: Dense(2),
    }
}

fn main() {
    use kiln::Model;
    let net = Branches::<f64>::new(0);
    assert_eq!(net.params().as_slice().len(), Branches::<f64>::PARAM_COUNT);
}
