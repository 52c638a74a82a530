// A layer norm whose eps is not positive.
kiln::model! {
    pub struct Net { input: [4, 8], LayerNorm(eps = 0.0), Flatten, Dense(1) }
}

fn main() {}
