// Summed branches must give one shape: a shortcut that does not project.
kiln::model! {
    pub struct Net {
        input: [3],
        block: Add { main: { Dense(4), Relu }, skip: {} },
    }
}

fn main() {}
