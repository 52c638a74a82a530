//! The `model!` language of kiln as a library: the procedural macro in `kiln-macros`
//! is a shell around [`expand`], and tests and fuzz targets call it directly on
//! `proc_macro2` token streams, without a compiler.
//!
//! Three stages, three modules: `parse` turns tokens into a typed tree that keeps
//! spans, `check` resolves layers and infers shapes (every mistake a spanned error),
//! `codegen` emits the struct and its passes as calls into the runtime. The stages
//! are generic: everything about one layer family (arguments, shape rule, parameters,
//! FLOPs, kernel calls) lives in its module under `layers`. Nothing on the path of
//! user input panics. See the `kiln` crate for the DSL reference.

mod blocks;
mod check;
mod codegen;
mod graph;
mod layers;
mod parse;

use proc_macro2::TokenStream;

/// The expansion of `model!`'s input: the model's struct and passes, or, for input that
/// does not parse or check, `compile_error!`s spanned on the culprit followed by the
/// bare struct (so that code naming the model still resolves). Never panics.
///
/// ```
/// let tokens: proc_macro2::TokenStream = "struct Net { input: [4], out: Dense(2) }".parse().unwrap();
/// let expanded = kiln_dsl::expand(tokens).to_string();
/// assert!(expanded.contains("fn forward_pass") && expanded.contains("fn backward_pass"));
///
/// let wrong: proc_macro2::TokenStream = "struct Net { input: [4], out: Dense(0) }".parse().unwrap();
/// assert!(kiln_dsl::expand(wrong).to_string().contains("compile_error"));
/// ```
pub fn expand(input: TokenStream) -> TokenStream {
    match syn::parse2::<parse::ModelDef>(input) {
        Ok(def) => expand_def(&def).unwrap_or_else(|error| fallback(&def, error)),
        Err(error) => error.into_compile_error(),
    }
}

/// Whether `input` is a valid model: `Ok`, or the first error the macro would report.
///
/// ```
/// let valid: proc_macro2::TokenStream = "struct Net { input: [1, 8, 8], Flatten, out: Dense(2) }".parse().unwrap();
/// assert!(kiln_dsl::check(valid).is_ok());
/// let wrong: proc_macro2::TokenStream = "struct Net { input: [16], Conv2d(8, kernel = 3) }".parse().unwrap();
/// println!("{}", kiln_dsl::check(wrong).unwrap_err()); // says what Conv2d needs
/// ```
pub fn check(input: TokenStream) -> syn::Result<()> {
    let def = syn::parse2::<parse::ModelDef>(input)?;
    check::check(&def).map(drop)
}

fn expand_def(def: &parse::ModelDef) -> syn::Result<TokenStream> {
    let checked = check::check(def)?;
    Ok(codegen::emit(def, &checked))
}

/// The errors plus the bare struct, so code that names the model still resolves.
fn fallback(def: &parse::ModelDef, error: syn::Error) -> TokenStream {
    let mut tokens = error.into_compile_error();
    tokens.extend(codegen::emit_fallback(def));
    tokens
}

#[cfg(test)]
mod tests {
    //! The expansion of one model, pretty-printed and compared with a checked-in
    //! snapshot, so that every change to the generated code shows up as a diff.
    //! Re-bless with `KILN_BLESS=1 cargo test -p kiln-dsl`.

    use super::*;

    fn expand_str(source: &str) -> String {
        let def: parse::ModelDef = syn::parse_str(source).expect("parses");
        let tokens = expand_def(&def).expect("valid model");
        let file: syn::File = syn::parse2(tokens).expect("expansion is valid Rust");
        prettyplease::unparse(&file)
    }

    #[test]
    fn mlp_expansion_matches_snapshot() {
        let actual = expand_str(
            "/// A small classifier.
             pub struct Mlp {
                 input: [784],
                 fc1: Dense(128), Relu,
                 Dropout(0.2),
                 fc2: Dense(10),
             }",
        );
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/mlp.rs");
        if std::env::var_os("KILN_BLESS").is_some() {
            std::fs::write(path, &actual).expect("write snapshot");
        }
        let expected =
            std::fs::read_to_string(path).expect("snapshot exists; bless it with KILN_BLESS=1");
        assert_eq!(
            actual, expected,
            "expansion changed; review and re-bless with KILN_BLESS=1"
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for source in [
            "struct M {}",
            "struct M { input: [] }",
            "struct M { input: [3], }",
            "struct M { input: [0], Dense(0) }",
            "struct M { input: [2, 3, 4, 5, 6], Relu }",
            "struct M { input: [3], Dense(-1) }",
            "struct M { input: [3], Dense(1, 2, 3) }",
            "struct M { input: [3], Dense(x) }",
            "struct M { input: [3], Residual }",
            "struct M { input: [3], Residual {} }",
            "struct M { input: [3], Residual { Flatten } }",
            "struct M { input: [3], Dense { Relu } }",
            "struct M { input: [3], Dropout(1.0) }",
            "struct M { input: [3], Dropout(p = 0.1, p = 0.2) }",
            "struct M { input: [3], a: Relu, a: Relu }",
            "struct M { input: [3, 4, 5], Dense(2), Dense(3) }",
            "struct M { input: [3], Residual { Dense(2) } }",
            "struct M { input: [3], Flatten }",
            "struct M { input: [3], Lstm(4) }",
            "struct M { input: [1, 4, 4], Conv2d(2, kernel = (3, 3, 3)) }",
            "struct M { input: [1, 4, 4], Conv2d(2, kernel = 0) }",
            "struct M { input: [1, 4, 4], Conv2d(0, kernel = 1) }",
            "struct M { input: [1, 4, 4], Conv2d(2, kernel = 5) }",
            "struct M { input: [1, 4, 4], MaxPool2d(3) }",
            "struct M { input: [1, 4, 4], MaxPool2d(2, padding = 2) }",
            "struct M { input: [1, 4, 4], AvgPool2d(kernel = -1) }",
            "struct M { input: [1, 4, 4], BatchNorm2d(eps = 0) }",
            "struct M { input: [1, 4, 4], BatchNorm2d(momentum = 2) }",
            "struct M { input: [4], BatchNorm2d }",
            "struct M { input: [4], GlobalAvgPool }",
            "struct M { input: [4, 3], Lstm(0) }",
            "struct M { input: [4, 3], LastStep(2) }",
            "struct M { input: [4], Embedding(vocab = 0, dim = 2) }",
            "struct M { input: [4], Dense(2), Embedding(vocab = 3, dim = 2) }",
            "struct M { input: [4, 6], MultiHeadAttention(heads = 4) }",
            "struct M { input: [4, 6], MultiHeadAttention(heads = 0) }",
            "struct M { input: [6], MultiHeadAttention(heads = 2) }",
            "struct M { input: [4, 6], LayerNorm(eps = -1.0) }",
            "struct M { input: [4, 6], Residual { Embedding(vocab = 3, dim = 6) } }",
            "struct M { input: [3], Concat }",
            "struct M { input: [3], Concat {} }",
            "struct M { input: [3], Add { a: Dense(2), b: {} } }",
            "struct M { input: [3], x: {} }",
            "struct M { input: [3], Sequential {} }",
            "struct M { input: [3], Mul { a: Dense(3, foo = 1), b: {} } }",
            "struct M { input: [2, 3, 3], Concat { a: {}, b: { Flatten } } }",
            "struct M { input: [2, 3], Concat { a: Dense(2), b: LastStep } }",
            "struct M { input: [3], Concat { a: Dense(2) } }",
            "struct M { input: [3], Concat { a: Dense(2), a: Dense(2) } }",
            "struct M { input: [3], Add { a: { Embedding(vocab = 3, dim = 2) }, b: {} } }",
            "struct M { input: [3], Concat(2) { a: {}, b: {} } }",
            "struct M { inputs: {} }",
            "struct M { inputs: { a: [] }, outputs: { y: a >> Dense(1) } }",
            "struct M { inputs: { a: [0] }, outputs: { y: a >> Dense(1) } }",
            "struct M { inputs: { a: [3] }, outputs: {} }",
            "struct M { inputs: { a: [3] }, outputs: { a } }",
            "struct M { inputs: { a: [3] }, outputs: { y: a } }",
            "struct M { inputs: { a: [3] }, outputs: { y: Concat() >> Dense(1) } }",
            "struct M { inputs: { a: [3] }, outputs: { y: Concat(a, a) >> Dense(1) } }",
            "struct M { inputs: { a: [3] }, outputs: { y: a >> {} } }",
            "struct M { inputs: { a: [3] }, outputs: { y: a >> Flatten } }",
            "struct M { inputs: { a: [3] }, h: h >> Dense(2), outputs: { y: h >> Dense(1) } }",
            "struct M { inputs: { a: [3] }, outputs: { y: a >> Embedding(3, 2), z: y >> Embedding(3, 2) } }",
            "struct M { inputs: { a: [3], b: [2, 3] }, outputs: { y: Concat(a, b) >> Dense(1) } }",
            "struct M { inputs: { a: [3] }, outputs: { y: a >> Residual { Dense(2) } } }",
            "struct M { input: [3], Add { a: Dens(3), b: {} } }",
            "struct M { input: [3], Repeat(0) { Dense(3) } }",
            "struct M { input: [3], Repeat { Dense(3) } }",
            "struct M { input: [3], Repeat(2) }",
            "struct M { input: [3], Repeat(2) {} }",
            "struct M { input: [3], Repeat(2) { Dens(3) } }",
            "struct M { input: [3, 4, 5], Repeat(2) { Dense(3) } }",
            "struct M { input: [3], Repeat(2) { Flatten } }",
            "struct M { input: [1, 4, 4], ConvTranspose2d(0, kernel = 2) }",
            "struct M { input: [1, 4, 4], ConvTranspose2d(2, kernel = 0) }",
            "struct M { input: [1, 4, 4], ConvTranspose2d(2, kernel = 2, stride = 0) }",
            "struct M { input: [1, 4, 4], ConvTranspose2d(2, kernel = 2, dilation = 0) }",
            "struct M { input: [1, 4, 4], ConvTranspose2d(2, kernel = 2, output_padding = 1) }",
            "struct M { input: [1, 1, 1], ConvTranspose2d(2, kernel = 1, padding = 1) }",
            "struct M { input: [4], ConvTranspose2d(2, kernel = 2) }",
            "struct M { input: [1, 4, 4], Upsample(0) }",
            "struct M { input: [1, 4, 4], Upsample(2, mode = 3) }",
            "struct M { input: [1, 4, 4], Upsample(2, mode = a::b) }",
            "struct M { input: [1, 4, 4], Upsample(2, mode = \"\") }",
            "struct M { input: [1, 4, 4], Upsample }",
            "struct M { input: [4], Upsample(2) }",
            "block B { B } struct M { input: [3], B }",
            "block B { C } block C { B } struct M { input: [3], B, C }",
            "block B(x) { Dense(x) } struct M { input: [3], B(y = 1) }",
            "block B(x) { Dense(x) } struct M { input: [3], B(0) }",
            "block B(x) { Dense(x) } struct M { input: [3], B }",
            "block B(x) { Dense((x, x)) } struct M { input: [3], B(2) }",
            "block B(x) { Dense(x) } struct M { input: [3], B(-x) }",
            "block Dense { } struct M { input: [3], Dense(2) }",
            "block B {} struct M { input: [3], B }",
            "block B { Flatten } struct M { input: [3], B }",
            "block B { Embedding(vocab = 3, dim = 2) } struct M { input: [3], Dense(3), B }",
            "block B(x, x) { Dense(x) } struct M { input: [3], B(1, 2) }",
            "block B { Dense(2) } struct M { input: [3], B { Relu } }",
            "block B { Dense(2) } block B { Dense(3) } struct M { input: [3], B }",
            "block B(x) { Dense(x) } struct M { input: [3], Residual { B(3) }, B(3, 4) }",
            "struct M { input: [1, 28, 28], Conv2d(16, kernel = 3, padding = 42949672961), MaxPool2d(2) }",
            "struct M { input: [1, 28, 28], Conv2d(16, kernel = 3, padding = 18446744073709551615) }",
            "struct M { input: [1, 28, 28], Conv2d(16, kernel = 18446744073709551615) }",
            "struct M { input: [1, 28, 28], Conv2d(16, kernel = 3, dilation = 18446744073709551615) }",
            "struct M { input: [1, 28, 28], Conv2d(16, kernel = 3, stride = 18446744073709551615) }",
            "struct M { input: [1, 28, 28], ConvTranspose2d(16, kernel = 3, stride = 18446744073709551615) }",
            "struct M { input: [1, 28, 28], ConvTranspose2d(16, kernel = 18446744073709551615) }",
            "struct M { input: [1, 28, 28], ConvTranspose2d(16, kernel = 3, dilation = 9223372036854775807) }",
            "struct M { input: [1, 28, 28], MaxPool2d(18446744073709551615) }",
            "struct M { input: [1, 28, 28], AvgPool2d(2, stride = 18446744073709551615) }",
            "struct M { input: [1, 28, 28], Upsample(18446744073709551615) }",
            "struct M { input: [1, 28, 28], Upsample((4294967296, 4294967296)) }",
            "struct M { input: [4294967296, 4294967296, 2] }",
            "struct M { input: [65536, 65536, 2], Flatten, Dense(2) }",
            "struct M { input: [784], Dense(18446744073709551615) }",
            "struct M { input: [784], Dense(4294967296), Dense(4294967296) }",
            "struct M { input: [4, 6], Lstm(18446744073709551615) }",
            "struct M { input: [4, 6], Gru(9223372036854775807, bidirectional = true) }",
            "struct M { input: [4], Embedding(18446744073709551615, 18446744073709551615) }",
            "struct M { input: [4], Embedding(3, 4294967296) }",
            "struct M { input: [4, 6], Repeat(18446744073709551615) { Dense(6) } }",
            "struct M { input: [4, 6], TransformerEncoderLayer(heads = 2, ff = 18446744073709551615) }",
            "struct M { input: [2, 8, 8], Conv1d(4, kernel = 3) }",
            "struct M { input: [8, 8], Conv1d(4, kernel = 18446744073709551615, padding = 9223372036854775807) }",
            "struct M { input: [4, 6], MultiHeadAttention(heads = 2, memory = m) }",
            "struct M { inputs: { a: [4, 6] }, outputs: { y: a >> MultiHeadAttention(heads = 2, memory = y) } }",
            "struct M { inputs: { a: [4, 6], b: [5, 4] }, outputs: { y: a >> MultiHeadAttention(heads = 2, memory = b) } }",
            "struct M { inputs: { a: [4, 6], b: [5] }, outputs: { y: a >> MultiHeadAttention(heads = 2, memory = b) } }",
            "struct M { inputs: { a: [4, 6], p: [4, 1] }, outputs: { y: a >> MultiHeadAttention(heads = 2, key_padding = p) } }",
            "struct M { inputs: { a: [4, 6] }, outputs: { y: a >> MultiHeadAttention(heads = 2, memory = a::b) } }",
            "struct M { inputs: { a: [4, 6] }, outputs: { y: a >> MultiHeadAttention(heads = 2, memory = (a)) } }",
            "struct M { inputs: { a: [4, 6], b: [5, 6] }, outputs: { y: a >> MultiHeadAttention(heads = 2, causal = true, memory = b) } }",
            "struct M { input: [4, 6], TransformerEncoderLayer(heads = 0, ff = 8) }",
            "struct M { input: [4, 6], TransformerEncoderLayer(heads = 2, ff = 0) }",
            "struct M { input: [4, 6], TransformerEncoderLayer(heads = 2, ff = 8, dropout = -0.5) }",
            "struct M { input: [4, 6], TransformerEncoderLayer(heads = 2, ff = 8, eps = 0) }",
            "struct M { input: [4, 6], TransformerEncoderLayer(heads = 2, ff = 8, activation = tanh) }",
            "struct M { input: [4, 6], TransformerDecoderLayer(heads = 2, ff = 8, memory = m) }",
            "struct M { input: [6], TransformerEncoderLayer(heads = 2, ff = 8) }",
            "struct M { inputs: { a: [4, 6], b: [5, 6] }, outputs: { y: a >> TransformerDecoderLayer(heads = 4, ff = 8, memory = b) } }",
            "struct M { inputs: { a: [4, 6], b: [5, 6], p: [4] }, outputs: { y: a >> TransformerDecoderLayer(heads = 2, ff = 8, memory = b, memory_padding = p) } }",
        ] {
            let def: syn::Result<parse::ModelDef> = syn::parse_str(source);
            if let Ok(def) = def {
                assert!(expand_def(&def).is_err(), "{source} should be rejected");
            }
        }
    }

    /// Models at the edges of what kiln takes expand without an overflow (in a build
    /// with overflow checks, as `cargo test` is), and the limits accept the large ones
    /// they are meant to accept.
    #[test]
    fn the_largest_models_expand_without_overflow() {
        for (source, accepted) in [
            ("struct M { input: [16777216, 256], Dense(16777216) }", false),
            ("struct M { input: [256, 16777216], Dense(16777216) }", true),
            ("struct M { input: [4294967296], Dense(16777216) }", true),
            ("struct M { input: [16777216], Dense(16777216), Dense(16777216) }", true),
            ("struct M { input: [256, 16777216], MultiHeadAttention(heads = 16777216) }", true),
            ("struct M { input: [16777216, 256], MultiHeadAttention(heads = 256, causal = true) }", true),
            ("struct M { inputs: { a: [16777216, 256], m: [16777216, 256], p: [16777216] }, outputs: { y: a >> MultiHeadAttention(heads = 1, memory = m, key_padding = p) } }", true),
            ("struct M { input: [16777216, 256], Lstm(16777216, bidirectional = true) }", false),
            ("struct M { input: [256, 16777216], Gru(16777216) }", true),
            ("struct M { input: [16777216], Embedding(4294967296, 16777216) }", false),
            ("struct M { input: [16777216, 1, 256], Conv2d(16777216, kernel = (1, 16), floor = true) }", true),
            ("struct M { input: [16, 4096, 4096], Conv2d(16777216, kernel = 4096, stride = 16777216, floor = true) }", true),
            ("struct M { input: [16, 4096, 4096], MaxPool2d(4096, padding = 2048, floor = true) }", false),
            ("struct M { input: [16, 4096, 4096], ConvTranspose2d(16777216, kernel = 4096, padding = 16777216) }", false),
            ("struct M { input: [1, 16777216, 256], Upsample(16777216) }", false),
            ("struct M { input: [256, 16777216], TransformerEncoderLayer(heads = 16777216, ff = 16777216) }", true),
            ("struct M { input: [16777216, 16], LayerNorm, Dense(16777216), Gelu }", false),
            ("struct M { input: [16777216], BatchNorm1d, Dropout(0.5), Dense(16777216) }", true),
            // A vocabulary may go past the other arguments' limit, to 2^32.
            ("struct M { input: [1], Embedding(100000000, 8), Flatten, Dense(1) }", true),
            ("struct M { input: [1], Embedding(4294967297, 8), Flatten, Dense(1) }", false),
        ] {
            let def: parse::ModelDef = syn::parse_str(source).expect(source);
            assert_eq!(expand_def(&def).is_ok(), accepted, "{source}");
        }
    }
}
