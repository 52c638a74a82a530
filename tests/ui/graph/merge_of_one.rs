// A merge of a single node.
kiln::model! {
    pub struct Net { inputs: { x: [4] }, h: Concat(x) >> Dense(4), outputs: { y: h >> Dense(1) } }
}

fn main() {}
