// A model with nothing in its braces.
kiln::model! {
    pub struct Net {}
}

fn main() {}
