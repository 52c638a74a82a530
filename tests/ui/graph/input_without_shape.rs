// An input declared without its shape.
kiln::model! {
    pub struct Net { inputs: { x: 4 }, outputs: { y: x >> Dense(1) } }
}

fn main() {}
