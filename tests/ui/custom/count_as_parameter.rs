// A count declared among the parameters: counts are buffers, never trained.
use kiln::custom::{Backward, Forward, Layer, ParamDecl};
use kiln::init::Init;

pub struct Counting;

impl Layer for Counting {
    const INPUT: &'static [usize] = &[2];
    const OUTPUT: &'static [usize] = &[2];
    const PARAMS: &'static [ParamDecl] = &[ParamDecl::new("seen", &[], Init::Zeros).count()];

    fn forward<T: kiln::Float>(io: Forward<'_, T>) {
        io.output.copy_from_slice(io.input);
    }

    fn backward<T: kiln::Float>(_: Backward<'_, T>) {}
}

kiln::model! {
    pub struct Net {
        input: [2],
        counting: use Counting,
    }
}

fn main() {}
