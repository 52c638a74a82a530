//! Parameter initialisation, deterministic per seed.
//!
//! Every parameter is drawn from one ChaCha8 stream seeded by the model's seed, in the
//! order of the model's parameter table, so the same seed gives bit-identical weights
//! on every machine. The distributions are PyTorch's defaults for each layer.
//!
//! ```
//! use kiln::prelude::*;
//! kiln::model! { struct Net { input: [16], fc: Dense(8), out: Dense(2) } }
//! let net = Net::<f32>::new(7);
//! // PyTorch's nn.Linear default: U(−1/√fan_in, 1/√fan_in) for weight and bias.
//! assert!(net.params().get("fc.weight").unwrap().iter().all(|w| w.abs() <= 0.25));
//! assert_eq!(net.params().as_slice(), Net::<f32>::new(7).params().as_slice());
//! # Ok::<(), kiln::Error>(())
//! ```

use rand_core::{Rng as _, SeedableRng};

use crate::{Float, Rng};

/// How a parameter tensor starts.
///
/// ```
/// use kiln_runtime::init::{init_rng, Init};
/// let mut weights = [0.0_f64; 256];
/// Init::FanInUniform { fan_in: 16 }.fill(&mut weights, &mut init_rng(7));
/// assert!(weights.iter().all(|w| w.abs() <= 0.25)); // 1/√16
/// let mut again = [0.0_f64; 256];
/// Init::FanInUniform { fan_in: 16 }.fill(&mut again, &mut init_rng(7));
/// assert_eq!(weights, again); // the same seed, the same weights
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// `U(-bound, bound)`, `bound = 1/√fan_in`: PyTorch's `Linear` and `Conv` default
    /// for both weight (kaiming-uniform with `a = √5`) and bias.
    FanInUniform {
        /// Inputs feeding one output.
        fan_in: usize,
    },
    /// `U(-b, b)` with `b = √(6 / (fan_in + fan_out))`: Xavier/Glorot, PyTorch's choice
    /// for attention's input projection.
    XavierUniform {
        /// Inputs feeding one output.
        fan_in: usize,
        /// Outputs fed by one input.
        fan_out: usize,
    },
    /// `N(0, std²)`: PyTorch's `Embedding` default (`std = 1`).
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
}

impl Init {
    /// Fills `values` from `rng`.
    ///
    /// ```
    /// use kiln_runtime::init::{init_rng, Init};
    /// let mut gains = [0.0_f32; 4];
    /// Init::Ones.fill(&mut gains, &mut init_rng(0));
    /// assert_eq!(gains, [1.0; 4]);
    /// ```
    pub fn fill<T: Float>(self, values: &mut [T], rng: &mut Rng) {
        match self {
            Init::FanInUniform { fan_in } => {
                let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                for v in values {
                    *v = T::from_f64(bound * (2.0 * uniform(rng) - 1.0));
                }
            }
            Init::XavierUniform { fan_in, fan_out } => {
                let bound = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
                for v in values {
                    *v = T::from_f64(bound * (2.0 * uniform(rng) - 1.0));
                }
            }
            Init::Normal { std } => {
                // Box-Muller: two uniforms give two independent normals.
                for pair in values.chunks_mut(2) {
                    let (u1, u2) = (1.0 - uniform(rng), uniform(rng));
                    let r = (-2.0 * u1.ln()).sqrt() * std;
                    let angle = core::f64::consts::TAU * u2;
                    pair[0] = T::from_f64(r * angle.cos());
                    if let Some(second) = pair.get_mut(1) {
                        *second = T::from_f64(r * angle.sin());
                    }
                }
            }
            Init::Zeros => values.fill(T::ZERO),
            Init::Ones => values.fill(T::ONE),
        }
    }
}

/// A uniform draw from `[0, 1)` with 53 random bits.
///
/// ```
/// use kiln_runtime::init::{init_rng, uniform};
/// let mut rng = init_rng(1);
/// assert!((0..1000).map(|_| uniform(&mut rng)).all(|u| (0.0..1.0).contains(&u)));
/// ```
pub fn uniform(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The generator parameters are drawn from.
///
/// ```
/// use kiln_runtime::init::{init_rng, uniform};
/// assert_eq!(uniform(&mut init_rng(3)), uniform(&mut init_rng(3)));
/// ```
pub fn init_rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// The generator dropout masks are drawn from: the same seed, another stream, so
/// adding dropout does not change the initial weights.
///
/// ```
/// use kiln_runtime::init::{dropout_rng, init_rng, uniform};
/// assert_ne!(uniform(&mut dropout_rng(3)), uniform(&mut init_rng(3)));
/// ```
pub fn dropout_rng(seed: u64) -> Rng {
    let mut rng = Rng::seed_from_u64(seed);
    rng.set_stream(1);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_in_uniform_has_pytorch_bounds_and_moments() {
        let mut rng = init_rng(7);
        let mut w = vec![0.0_f64; 100_000];
        Init::FanInUniform { fan_in: 784 }.fill(&mut w, &mut rng);
        let bound = 1.0 / 28.0;
        assert!(w.iter().all(|v| v.abs() <= bound));
        let mean = w.iter().sum::<f64>() / w.len() as f64;
        let var = w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64;
        assert!(mean.abs() < 1e-3 * bound * 10.0);
        // Variance of U(-b, b) is b²/3.
        assert!((var / (bound * bound / 3.0) - 1.0).abs() < 0.02);
    }

    #[test]
    fn same_seed_same_values() {
        let draw = |seed| {
            let mut w = vec![0.0_f32; 16];
            Init::FanInUniform { fan_in: 3 }.fill(&mut w, &mut init_rng(seed));
            w
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }
}
