// Outputs listed without braces.
kiln::model! {
    pub struct Net { inputs: { x: [4] }, outputs: y }
}

fn main() {}
