//! Compile-time behaviour of `model!`: every mistake the macro reports, one per file
//! with its expected message in the `.stderr` beside it, and valid models that must
//! compile without warnings.
//!
//! The `.stderr` files were blessed with rustc 1.95.0. Compiler output drifts between
//! versions: re-bless with `TRYBUILD=overwrite cargo test --release --test ui` and
//! review the diff before committing it.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    for category in [
        "args", "blocks", "custom", "input", "layers", "model", "names", "shape", "syntax", "types",
    ] {
        t.compile_fail(format!("tests/ui/{category}/*.rs"));
    }
    t.pass("tests/ui/pass/*.rs");
}
