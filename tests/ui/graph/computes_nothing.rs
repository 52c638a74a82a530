// A graph model whose only layer renames the shape.
kiln::model! {
    pub struct Net { inputs: { x: [2, 3] }, outputs: { y: x >> Flatten } }
}

fn main() {}
