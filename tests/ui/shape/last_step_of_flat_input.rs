// LastStep on an input that is not [steps, features].
kiln::model! {
    pub struct Net { input: [6], LastStep, Dense(1) }
}

fn main() {}
