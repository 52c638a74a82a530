// A batch norm momentum outside [0, 1].
kiln::model! {
    pub struct Net { input: [8], BatchNorm1d(momentum = 1.5), Dense(1) }
}

fn main() {}
