//! AFL++ target: `cargo afl build --release && cargo afl fuzz -i corpus/idx -o out/idx target/release/idx`.

fn main() {
    afl::fuzz!(|data: &[u8]| kiln_fuzz::idx(data));
}
