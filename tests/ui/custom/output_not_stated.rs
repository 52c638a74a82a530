// A layer that changes the shape, used without `->`.
use kiln::custom::{Backward, Forward, Layer};

/// Sums pairs: `[2 N]` to `[N]`.
pub struct PairSum<const N: usize>;

impl<const N: usize> Layer for PairSum<N> {
    const INPUT: &'static [usize] = &[2 * N];
    const OUTPUT: &'static [usize] = &[N];

    fn forward<T: kiln::Float>(io: Forward<'_, T>) {
        for (y, x) in io.output.iter_mut().zip(io.input.chunks(2)) {
            *y = x[0] + x[1];
        }
    }

    fn backward<T: kiln::Float>(io: Backward<'_, T>) {
        if let Some(dx) = io.grad_input {
            for (d, &g) in dx.chunks_mut(2).zip(io.grad_output) {
                d[0] += g;
                d[1] += g;
            }
        }
    }
}

kiln::model! {
    pub struct Net {
        input: [8],
        sum: use PairSum<4>,
        Dense(2),
    }
}

fn main() {}
