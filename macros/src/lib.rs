//! The `model!` procedural macro of kiln: the compiler's tokens in, `kiln-dsl`'s
//! expansion out. Everything else (parsing, checking, code generation) is in
//! `kiln-dsl`, a plain library, so that tests and fuzz targets can run it without a
//! compiler.

use proc_macro::TokenStream;

/// Declares a statically shaped neural network; see the `kiln` crate's documentation.
#[proc_macro]
pub fn model(input: TokenStream) -> TokenStream {
    kiln_dsl::expand(input.into()).into()
}
