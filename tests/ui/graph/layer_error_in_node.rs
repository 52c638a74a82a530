// A shape error inside a node, on the node's layer.
kiln::model! {
    pub struct Net { inputs: { image: [1, 8, 8], meta: [3] }, m: meta >> Conv2d(4, kernel = 3), outputs: { y: Concat(image, m) >> Dense(1) } }
}

fn main() {}
