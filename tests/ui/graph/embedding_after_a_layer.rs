// An embedding after another layer of its node.
kiln::model! {
    pub struct Net { inputs: { ids: [6] }, h: ids >> { Dense(6), Embedding(10, 4) }, outputs: { y: h >> { Flatten, Dense(1) } } }
}

fn main() {}
