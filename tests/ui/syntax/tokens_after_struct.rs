// Tokens after the model's struct.
kiln::model! {
    pub struct Net { input: [4], Dense(2) } extra
}

fn main() {}
