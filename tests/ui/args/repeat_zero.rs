// A block repeated zero times.
kiln::model! {
    pub struct Net {
        input: [4],
        stage: Repeat(0) { Dense(4), Relu },
        out: Dense(2),
    }
}

fn main() {}
