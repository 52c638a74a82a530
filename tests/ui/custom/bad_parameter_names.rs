// Two parameter tensors with one name.
use kiln::custom::{Backward, Forward, Layer, ParamDecl};
use kiln::init::Init;

pub struct Twice;

impl Layer for Twice {
    const INPUT: &'static [usize] = &[2];
    const OUTPUT: &'static [usize] = &[2];
    const PARAMS: &'static [ParamDecl] = &[
        ParamDecl::new("weight", &[2], Init::Ones),
        ParamDecl::new("weight", &[2], Init::Zeros),
    ];

    fn forward<T: kiln::Float>(io: Forward<'_, T>) {
        io.output.copy_from_slice(io.input);
    }

    fn backward<T: kiln::Float>(_: Backward<'_, T>) {}
}

kiln::model! {
    pub struct Net {
        input: [2],
        twice: use Twice,
    }
}

fn main() {}
