// A type that does not implement `kiln::Layer`.
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

pub struct NotALayer;

kiln::model! {
    pub struct Net {
        input: [4],
        thing: use NotALayer,
        Dense(2),
    }
}

fn main() {}
