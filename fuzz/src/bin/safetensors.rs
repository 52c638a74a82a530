//! AFL++ target: `cargo afl build --release && cargo afl fuzz -i corpus/safetensors -o out/safetensors target/release/safetensors`.

fn main() {
    afl::fuzz!(|data: &[u8]| kiln_fuzz::safetensors(data));
}
