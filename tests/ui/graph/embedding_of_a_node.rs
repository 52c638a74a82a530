// An embedding that reads a node, not an input.
kiln::model! {
    pub struct Net { inputs: { ids: [6] }, h: ids >> Relu, e: h >> Embedding(10, 4), outputs: { y: e >> { Flatten, Dense(1) } } }
}

fn main() {}
