// A batch norm whose eps is not positive.
kiln::model! {
    pub struct Net { input: [8], BatchNorm1d(eps = -1e-5), Dense(1) }
}

fn main() {}
