//! The element types a network computes in.
//!
//! [`Float`] is implemented for `f32` (training and inference) and `f64` (what the
//! gradient checks use). It is sealed: the kernels rely on IEEE semantics and on
//! faer's SIMD dispatch, which exist only for these two.
//!
//! ```
//! use kiln::prelude::*;
//! kiln::model! { struct Net { input: [2], out: Dense(1) } }
//! // The same model in either type; f64 for gradient checks, f32 for speed.
//! let (single, double) = (Net::<f32>::new(0), Net::<f64>::new(0));
//! assert_eq!(single.params().as_slice()[0] as f64, double.params().as_slice()[0] as f32 as f64);
//! # Ok::<(), kiln::Error>(())
//! ```

use core::fmt::{Debug, Display};
use core::iter::Sum;
use core::ops::Neg;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// An element type of tensors, parameters and gradients: `f32` or `f64`.
///
/// ```
/// use kiln_runtime::Float;
/// fn half<T: Float>(x: T) -> T { x * T::from_f64(0.5) }
/// assert_eq!(half(3.0_f32), 1.5);
/// ```
pub trait Float:
    faer::traits::RealField
    + Copy
    + Default
    + Send
    + Sync
    + Debug
    + Display
    + Neg<Output = Self>
    + Sum
    + 'static
    + sealed::Sealed
{
    /// The type's name as safetensors and summaries spell it (`"F32"`, `"F64"`).
    const DTYPE: &'static str;
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
    /// Converts from `f64`, rounding to nearest.
    fn from_f64(x: f64) -> Self;
    /// Converts to `f64` exactly.
    fn to_f64(self) -> f64;
    /// `e^self`.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// `ln(1 + self)`, accurate near zero.
    fn ln_1p(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// The bits of `|self|` as an unsigned integer: for finite values their order is the
    /// order of the magnitudes, and every infinity and NaN is at least
    /// [`NON_FINITE_BITS`](Self::NON_FINITE_BITS). An integer maximum over them is a
    /// reduction the compiler vectorises without reordering any float arithmetic.
    #[doc(hidden)]
    fn abs_bits(self) -> Self::AbsBits;
    /// The value whose [`abs_bits`](Self::abs_bits) these are.
    #[doc(hidden)]
    fn from_abs_bits(bits: Self::AbsBits) -> Self;
    /// The unsigned integer of [`abs_bits`](Self::abs_bits).
    #[doc(hidden)]
    type AbsBits: Copy + Ord + Default + Debug + Send + Sync + 'static;
    /// The bits of infinity: magnitudes at or above are not finite.
    #[doc(hidden)]
    const NON_FINITE_BITS: Self::AbsBits;
    /// The error function.
    fn erf(self) -> Self;
    /// `exp`, in a form the compiler vectorises: for `f32` a branch-free range reduction
    /// and polynomial (relative error below 3e-7, see [`fast_exp_f32`]); `f64`'s own
    /// `exp`. For loops inside [`vectorized`](crate::simd) that would otherwise make a
    /// library call per value.
    fn fast_exp(self) -> Self;
    /// The error function in a form the compiler vectorises: for `f32` a branch-free
    /// rational approximation (absolute error below 6e-7, see [`fast_erf_f32`]); exact
    /// for `f64`.
    fn fast_erf(self) -> Self;
    /// `(erf(x), e^{−x²})` with [`fast_erf`](Self::fast_erf)'s accuracy: `f32`'s
    /// approximation computes `e^{−x²}` on the way, so GELU's derivative, which needs
    /// both, takes one exponential instead of two.
    #[doc(hidden)]
    fn fast_erf_gauss(self) -> (Self, Self);
    /// The larger of two values (NaN-ignoring, like `f32::max`).
    fn max(self, other: Self) -> Self;
    /// The smaller of two values.
    fn min(self, other: Self) -> Self;
    /// Neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// `-1`, `0` or `1` by sign; `0` for zero (the subgradient L1 uses).
    fn signum0(self) -> Self;
    /// `tanh` of every value, in place. Exact for `f64`; for `f32` a branch-free
    /// rational approximation the compiler vectorises (absolute error below 2e-6),
    /// which is what recurrent gates spend their time on.
    fn tanh_in_place(values: &mut [Self]);
    /// The logistic function of every value, in place, as `(1 + tanh(x/2)) / 2` with
    /// [`tanh_in_place`](Self::tanh_in_place)'s accuracy.
    fn sigmoid_in_place(values: &mut [Self]);
    /// `recv = Σ over ranks of send`, through the communicator's method for this type.
    #[doc(hidden)]
    fn all_reduce_sum(
        comm: &dyn crate::distributed::Communicator,
        send: &[Self],
        recv: &mut [Self],
    ) -> crate::Result<()>;
}

/// Eigen's rational approximation of tanh on `[-7.9053, 7.9053]` (odd degree 13 over
/// even degree 6), clamped outside, where tanh is ±1 in f32. Plain multiply-adds, not
/// `mul_add`: without FMA enabled at compile time `mul_add` is a library call per value.
#[inline(always)]
fn fast_tanh_f32(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const BETA: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let mut p = ALPHA[6];
    for &c in ALPHA[..6].iter().rev() {
        p = p * x2 + c;
    }
    let mut q = BETA[3];
    for &c in BETA[..3].iter().rev() {
        q = q * x2 + c;
    }
    x * p / q
}

/// `e^x` for `f32` without a library call or a branch, so a loop of it vectorises:
/// `x = n ln 2 + r` with `n` rounded to nearest (by the 1.5·2²³ trick, which needs no
/// rounding instruction) and `|r| ≤ ln 2 / 2`, `e^r` by its Taylor polynomial of degree
/// 7 (truncation below 2e-8 there), and `2^n` built in the exponent bits. `ln 2` is
/// split in two so that `r` keeps its low bits. Inputs are clamped to [−87.3, 88], where
/// `2^n` is a normal `f32`; below, the result is 0 (chosen with a select, not a branch)
/// rather than a subnormal, so that a softmax gives exactly 0 to a logit far below the
/// others, as with `exp`; above, `e^88` rather than up to `e^88.7` or infinity.
#[inline(always)]
pub(crate) fn fast_exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23
    const LOWEST: f32 = -87.336_54;
    let underflow = x < LOWEST;
    let x = x.clamp(LOWEST, 88.0);
    let shifted = x * core::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    // `n` is in the low bits of `shifted` (offset by 2^22); add it to 1.0's exponent.
    let n_bits = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits((n_bits.wrapping_add(127) << 23) as u32);
    if underflow {
        0.0
    } else {
        p * scale
    }
}

/// `erf(x)` for `f32` without a library call or a branch: Abramowitz and Stegun's
/// 7.1.26, `1 − (a₁t + a₂t² + a₃t³ + a₄t⁴ + a₅t⁵) e^{−x²}` with `t = 1/(1 + p|x|)`
/// (absolute error 1.5e-7; below 6e-7 with f32 rounding), on `|x|` and given `x`'s sign,
/// with [`fast_exp_f32`].
#[inline(always)]
pub(crate) fn fast_erf_f32(x: f32) -> f32 {
    fast_erf_gauss_f32(x).0
}

/// [`fast_erf_f32`] and the `e^{−x²}` it is made of.
#[inline(always)]
pub(crate) fn fast_erf_gauss_f32(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let mut poly = A[4];
    for &c in A[..4].iter().rev() {
        poly = poly * t + c;
    }
    let gauss = fast_exp_f32(-a * a);
    let y = 1.0 - poly * t * gauss;
    (y.copysign(x), gauss)
}

/// The magnitude whose [`Float::abs_bits`] are `bits` (a maximum of them), or `None`
/// if it is infinite or NaN.
pub(crate) fn finite_magnitude<T: Float>(bits: T::AbsBits) -> Option<T> {
    (bits < T::NON_FINITE_BITS).then(|| T::from_abs_bits(bits))
}

macro_rules! impl_float {
    ($t:ty, $bits:ty, $name:literal, $erf:path, $fast_exp:expr, $fast_erf:expr, $fast_erf_gauss:expr, $reduce:ident, $tanh_slice:expr) => {
        impl Float for $t {
            type AbsBits = $bits;
            const NON_FINITE_BITS: $bits = <$t>::INFINITY.to_bits();
            #[inline(always)]
            fn abs_bits(self) -> $bits {
                self.to_bits() & !(1 << (<$bits>::BITS - 1))
            }
            #[inline(always)]
            fn from_abs_bits(bits: $bits) -> Self {
                <$t>::from_bits(bits)
            }
            const DTYPE: &'static str = $name;
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn fast_exp(self) -> Self {
                ($fast_exp)(self)
            }
            #[inline(always)]
            fn fast_erf(self) -> Self {
                ($fast_erf)(self)
            }
            #[inline(always)]
            fn fast_erf_gauss(self) -> (Self, Self) {
                ($fast_erf_gauss)(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn min(self, other: Self) -> Self {
                <$t>::min(self, other)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn all_reduce_sum(
                comm: &dyn crate::distributed::Communicator,
                send: &[Self],
                recv: &mut [Self],
            ) -> crate::Result<()> {
                comm.$reduce(send, recv)
            }
            fn tanh_in_place(values: &mut [Self]) {
                ($tanh_slice)(values);
            }
            fn sigmoid_in_place(values: &mut [Self]) {
                crate::simd::vectorized(
                    #[inline(always)]
                    || {
                        values.iter_mut().for_each(|v| *v *= 0.5);
                        Self::tanh_in_place(values);
                        values.iter_mut().for_each(|v| *v = 0.5 + 0.5 * *v);
                    },
                );
            }
            #[inline(always)]
            fn signum0(self) -> Self {
                if self > 0.0 {
                    1.0
                } else if self < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
        }
    };
}

impl_float!(
    f32,
    u32,
    "F32",
    libm::erff,
    fast_exp_f32,
    fast_erf_f32,
    fast_erf_gauss_f32,
    all_reduce_sum_f32,
    |values: &mut [f32]| {
        crate::simd::vectorized(
            #[inline(always)]
            || {
                for v in values.iter_mut() {
                    *v = fast_tanh_f32(*v);
                }
            },
        );
    }
);
impl_float!(
    f64,
    u64,
    "F64",
    libm::erf,
    f64::exp,
    libm::erf,
    |x: f64| (libm::erf(x), (-x * x).exp()),
    all_reduce_sum_f64,
    |values: &mut [f64]| {
        for v in values {
            *v = v.tanh();
        }
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_fast_exp_and_erf_are_close_to_exact() {
        let (mut worst_exp, mut worst_erf, mut worst_gauss) = (0.0_f64, 0.0_f64, 0.0_f64);
        for i in -870_000..=880_000 {
            let x = i as f32 / 10_000.0;
            let exact = f64::from(x).exp();
            worst_exp = worst_exp.max((f64::from(fast_exp_f32(x)) - exact).abs() / exact);
            if x.abs() < 10.0 {
                let e = (f64::from(fast_erf_f32(x)) - libm::erf(f64::from(x))).abs();
                worst_erf = worst_erf.max(e);
                // The pair is the same erf and, beside it, e^{−x²} to exp's accuracy
                // (relative to the f32 square, the exponential's own argument) where
                // exp is not flushed to zero.
                let (erf, gauss) = fast_erf_gauss_f32(x);
                assert_eq!(erf.to_bits(), fast_erf_f32(x).to_bits(), "{x}");
                let exact = f64::from(-x * x).exp();
                if x * x < 87.0 {
                    let e = (f64::from(gauss) - exact).abs() / exact;
                    worst_gauss = worst_gauss.max(e);
                } else {
                    assert!(gauss < 1e-37, "{x}: {gauss}");
                }
            }
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert!(worst_erf < 6e-7, "erf error {worst_erf}");
        assert!(worst_gauss < 3e-7, "e^(-x²) relative error {worst_gauss}");
        // The clamps: no infinity and no NaN from a finite input, 0 below the range (as
        // `exp` gives in f32 from about -104 on); NaN stays NaN.
        assert!(fast_exp_f32(1000.0).is_finite() && fast_exp_f32(-1000.0) == 0.0);
        assert_eq!(fast_erf_f32(-30.0), -1.0);
        assert!(fast_erf_f32(0.0).abs() < 2e-7);
        assert!(fast_exp_f32(f32::NAN).is_nan() && fast_erf_f32(f32::NAN).is_nan());
        // f64 is exact.
        assert_eq!(1.5_f64.fast_exp(), 1.5_f64.exp());
        assert_eq!(0.7_f64.fast_erf(), libm::erf(0.7));
        assert_eq!(
            0.7_f64.fast_erf_gauss(),
            (libm::erf(0.7), (-0.49_f64).exp())
        );
    }

    #[test]
    fn f32_tanh_and_sigmoid_are_close_to_exact() {
        let xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 / 1000.0).collect();
        let mut t = xs.clone();
        f32::tanh_in_place(&mut t);
        let mut s = xs.clone();
        f32::sigmoid_in_place(&mut s);
        let (mut worst_t, mut worst_s) = (0.0_f64, 0.0_f64);
        for ((&x, &tv), &sv) in xs.iter().zip(&t).zip(&s) {
            let x = f64::from(x);
            worst_t = worst_t.max((f64::from(tv) - x.tanh()).abs());
            worst_s = worst_s.max((f64::from(sv) - 1.0 / (1.0 + (-x).exp())).abs());
        }
        assert!(worst_t < 2e-6, "tanh error {worst_t}");
        assert!(worst_s < 2e-6, "sigmoid error {worst_s}");
        let mut exact = [0.3_f64, -2.0];
        f64::tanh_in_place(&mut exact);
        assert_eq!(exact, [0.3_f64.tanh(), (-2.0_f64).tanh()]);
    }
}
