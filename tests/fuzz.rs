//! The fuzz targets of `fuzz/` (the IDX and CSV readers, safetensors loading, the
//! `model!` language) under a mutation harness, for a fixed time each: the committed
//! seed corpus in `fuzz/corpus/`, mutated byte by byte and, for the text formats, token
//! by token. No coverage guidance — that is what the AFL++ build of the same targets is
//! for (docs/testing.md) — but it runs on any machine in CI.
//!
//! A panic is a failure: the input is written to `target/fuzz-crashes/` and named in
//! the message, to become a regression seed. `KILN_FUZZ_SECONDS` sets the time per
//! target (default 8).

#[path = "../fuzz/src/targets.rs"]
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Text that the text formats' mutations insert: the DSL's words and punctuation, and
/// numbers at the edges of every type.
const TOKENS: &[&str] = &[
    "Dense",
    "Conv2d",
    "Relu",
    "Flatten",
    "Residual",
    "Concat",
    "Add",
    "Mul",
    "Repeat",
    "Sequential",
    "Embedding",
    "Lstm",
    "Gru",
    "MultiHeadAttention",
    "LayerNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "MaxPool2d",
    "AvgPool2d",
    "GlobalAvgPool",
    "Dropout",
    "Upsample",
    "ConvTranspose2d",
    "LastStep",
    "Softmax",
    "Tanh",
    "Sigmoid",
    "block",
    "struct",
    "pub",
    "use",
    "input",
    "kernel",
    "stride",
    "padding",
    "dilation",
    "heads",
    "vocab",
    "dim",
    "eps",
    "momentum",
    "mode",
    "->",
    ":",
    ",",
    "=",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "0",
    "1",
    "-1",
    "2",
    "0.5",
    "1e308",
    "-0.0",
    "NaN",
    "inf",
    "4294967296",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "\"\"",
    "///",
    "\n",
    "\u{feff}",
    "\"1,2\"",
    "nan",
    "-inf",
    "1e-45",
];

/// Values that break sizes: zero, one, the edges of the integer types.
const INTERESTING: &[u32] = &[0, 1, 2, 0x7f, 0x80, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random change to `input`; `others` are the corpus to splice from.
fn mutate(input: &mut Vec<u8>, others: &[Vec<u8>], text: bool, rng: &mut Rng) {
    let len = input.len();
    match rng.below(if text { 10 } else { 8 }) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = INTERESTING[rng.below(INTERESTING.len())] as u8;
        }
        2 if len >= 4 => {
            let i = rng.below(len - 3);
            let value = INTERESTING[rng.below(INTERESTING.len())];
            let bytes = if rng.below(2) == 0 {
                value.to_be_bytes()
            } else {
                value.to_le_bytes()
            };
            input[i..i + 4].copy_from_slice(&bytes);
        }
        3 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(16)).min(len);
            input.drain(start..end);
        }
        4 => {
            let at = rng.below(len + 1);
            let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
            input.splice(at..at, bytes);
        }
        5 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(32)).min(len);
            let copy = input[start..end].to_vec();
            let at = rng.below(len + 1);
            input.splice(at..at, copy);
        }
        6 if !others.is_empty() => {
            let other = &others[rng.below(others.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        7 if len > 0 => input.truncate(rng.below(len)),
        _ if text => {
            let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
            let at = rng.below(len + 1);
            if rng.below(2) == 0 && at < len {
                // Replace the rest of a word with the token.
                let end = input[at..]
                    .iter()
                    .position(|b| !b.is_ascii_alphanumeric())
                    .map_or(len, |p| at + p.max(1));
                input.splice(at..end, token.iter().copied());
            } else {
                input.splice(at..at, token.iter().copied());
            }
        }
        _ => {}
    }
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "{}: no seeds", dir.display());
    seeds
}

/// Runs `target` on every seed, then on mutants of them until the time is up; returns
/// the number of runs.
fn fuzz(name: &str, target: fn(&[u8]), text: bool) -> u64 {
    let seconds: f64 = std::env::var("KILN_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8.0);
    let seeds = corpus(name);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut runs = 0u64;
    let mut input = Vec::new();
    let mut index = 0;
    loop {
        input.clear();
        if index < seeds.len() {
            input.extend_from_slice(&seeds[index]);
            index += 1;
        } else {
            if Instant::now() >= deadline {
                break;
            }
            input.extend_from_slice(&seeds[rng.below(seeds.len())]);
            for _ in 0..1 + rng.below(8) {
                mutate(&mut input, &seeds, text, &mut rng);
            }
        }
        runs += 1;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| target(&input))) {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}-{runs}"));
            std::fs::write(&path, &input).unwrap();
            panic!(
                "{name}: run {runs} panicked ({message}); the input is in {}",
                path.display()
            );
        }
    }
    println!("{name}: {runs} runs in {seconds} s, no panic");
    runs
}

#[test]
fn idx_reader() {
    assert!(fuzz("idx", targets::idx, false) > 0);
}

#[test]
fn csv_reader() {
    assert!(fuzz("csv", targets::csv, true) > 0);
}

#[test]
fn safetensors_load() {
    assert!(fuzz("safetensors", targets::safetensors, false) > 0);
}

#[test]
fn model_language() {
    assert!(fuzz("dsl", targets::dsl, true) > 0);
}

/// The seeds reach the targets' success paths, so that mutants start from inputs that
/// load rather than from errors.
#[test]
fn seeds_are_valid_inputs() {
    use kiln::data::{read_csv_bytes, read_idx_bytes, CsvOptions, LabelColumn};
    use kiln::io::LoadOptions;
    use kiln::Model;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let read = |path: &str| std::fs::read(dir.join(path)).unwrap();
    let images = read_idx_bytes(&read("idx/images.gz")).unwrap();
    assert_eq!(images.dims, [3, 2, 2]);
    let options = CsvOptions::new(LabelColumn::Last, 5);
    let set = read_csv_bytes::<f32, kiln::Shape1<3>>(&read("csv/seed00.gz")[1..], &options);
    assert_eq!(set.unwrap().len(), 3);
    for (file, options) in [
        ("safetensors/f32", LoadOptions::new()),
        ("safetensors/f64", LoadOptions::new()),
        ("safetensors/renamed", LoadOptions::new().rename("net.", "")),
    ] {
        let mut model = targets::Fuzzed::<f32>::new(0);
        let report = model.load_bytes(&read(file)[1..], &options).unwrap();
        assert_eq!(report.loaded.len(), 9, "{file}");
        assert_eq!(model.buffers().get("bn.running_var").unwrap(), [1.5, 1.5]);
    }
    let valid = corpus("dsl")
        .iter()
        .filter(|seed| {
            let text = std::str::from_utf8(seed).unwrap();
            kiln_dsl::check(text.parse().unwrap()).is_ok()
        })
        .count();
    assert!(valid >= 50, "only {valid} valid models among the seeds");
}
