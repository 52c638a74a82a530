// A repetition count that can only be a typo.
kiln::model! {
    pub struct Net { input: [8], blocks: Repeat(100000) { Dense(8), Relu }, Dense(2) }
}

fn main() {}
