// A buffer with a parameter's name: both would be saved as `norm.scale`.
use kiln::custom::{Backward, Forward, Layer, ParamDecl};
use kiln::init::Init;

pub struct Norm;

impl Layer for Norm {
    const INPUT: &'static [usize] = &[2];
    const OUTPUT: &'static [usize] = &[2];
    const PARAMS: &'static [ParamDecl] = &[ParamDecl::new("scale", &[2], Init::Ones)];
    const BUFFERS: &'static [ParamDecl] = &[ParamDecl::new("scale", &[2], Init::Zeros)];

    fn forward<T: kiln::Float>(io: Forward<'_, T>) {
        io.output.copy_from_slice(io.input);
    }

    fn backward<T: kiln::Float>(_: Backward<'_, T>) {}
}

kiln::model! {
    pub struct Net {
        input: [2],
        norm: use Norm,
    }
}

fn main() {}
