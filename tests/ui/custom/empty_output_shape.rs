// An output shape has a dimension.
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
    pub struct Net {
        input: [4],
        double: use Double<4> -> [],
    }
}

fn main() {}
