// A convolution window covering more values than kiln takes.
kiln::model! {
    pub struct Net { input: [65536, 64, 64], conv: Conv2d(8, kernel = 65, padding = 1), Flatten, Dense(10) }
}

fn main() {}
