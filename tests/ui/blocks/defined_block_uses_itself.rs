// Two blocks that use each other would expand forever.
kiln::model! {
    block Ping { Dense(4), Pong }
    block Pong { Relu, Ping }
    pub struct Net {
        input: [4],
        p: Ping,
    }
}

fn main() {}
