// A PyTorch name maps to kiln's.
kiln::model! {
    pub struct Net {
        input: [10],
        fc: Linear(2),
    }
}

fn main() {}
