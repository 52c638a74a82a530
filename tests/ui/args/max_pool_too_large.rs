// A max pooling over more values per sample than its argmax indices can hold.
kiln::model! {
    pub struct Net { input: [4096, 64, 128], MaxPool2d(kernel = 2) }
}

fn main() {}
