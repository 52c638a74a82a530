//! The `model!` procedural macro of kiln: the compiler's tokens in, `kiln-dsl`'s
//! expansion out. Everything else (parsing, checking, code generation) is in
//! `kiln-dsl`, a plain library, so that tests and fuzz targets can run it without a
//! compiler.

use proc_macro::TokenStream;

/// Declares a statically shaped neural network: a struct generic over `f32` or `f64`
/// with its forward and backward passes, every shape checked at compile time. The
/// language is described in `docs/dsl.md`, its errors in `docs/errors.md`.
///
/// ```
/// use kiln::prelude::*;
///
/// kiln::model! {
///     /// A small convolutional classifier for 8x8 grey images.
///     pub struct Digits {
///         input: [1, 8, 8],
///         conv: Conv2d(8, kernel = 3, padding = 1), Relu,   // [8, 8, 8]
///         MaxPool2d(2),                                    // [8, 4, 4]
///         Flatten,                                         // [128]
///         fc: Dense(32), Relu,
///         out: Dense(10),
///     }
/// }
///
/// assert_eq!(Digits::<f32>::SPEC.output, [10]);
/// assert_eq!(Digits::<f32>::PARAM_COUNT, 8 * 9 + 8 + 128 * 32 + 32 + 32 * 10 + 10);
/// let mut net = Digits::<f32>::new(0);
/// let x = TensorRef::<f32, Shape3<1, 8, 8>>::new(&[0.5; 2 * 64])?;
/// let loss = net.train_step(x, &[3usize, 7][..], &CrossEntropy::default(), &mut Adam::new(1e-3))?;
/// assert!(loss.is_finite());
/// # Ok::<(), kiln::Error>(())
/// ```
///
/// An impossible network does not compile, with the error on the layer at fault:
///
/// ```compile_fail
/// kiln::model! {
///     struct Wrong {
///         input: [16],
///         conv: Conv2d(8, kernel = 3), // a convolution needs [channels, height, width]
///     }
/// }
/// ```
#[proc_macro]
pub fn model(input: TokenStream) -> TokenStream {
    kiln_dsl::expand(input.into()).into()
}
