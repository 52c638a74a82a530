// A dilated kernel that spans more than the padded input.
kiln::model! {
    pub struct Net { input: [1, 6, 6], Conv2d(2, kernel = 3, dilation = 3), Flatten, Dense(1) }
}

fn main() {}
