//! AFL++ target: `cargo afl build --release && cargo afl fuzz -i corpus/dsl -o out/dsl target/release/dsl`.

fn main() {
    afl::fuzz!(|data: &[u8]| kiln_fuzz::dsl(data));
}
