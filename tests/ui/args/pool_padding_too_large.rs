// Pool padding larger than half its window.
kiln::model! {
    pub struct Net {
        input: [3, 32, 32],
        pool: MaxPool2d(2, padding = 2),
    }
}

fn main() {}
