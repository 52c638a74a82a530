//! Inverted dropout: in training each value is kept with probability `1 - p` and
//! scaled by `1 / (1 - p)`; in inference the layer is the identity.
//!
//! The scale factors of the last training pass (`0` or `1 / (1 - p)`) are kept in a
//! mask buffer of the workspace, which backward multiplies the gradient by.
//!
//! # Shapes
//! Any: the output has the input's shape.

use rand_core::Rng as _;

use super::{check_len, store, Accum};
use crate::{Float, Rng};

/// Training: draws a mask and writes `output = input ⊙ mask`. Inference (`rng` is
/// `None`): copies `input`.
///
/// # Panics
/// If the lengths differ or `p` is not in `[0, 1)`.
pub fn dropout_forward<T: Float>(
    output: &mut [T],
    mask: &mut [T],
    input: &[T],
    p: f64,
    rng: Option<&mut Rng>,
) {
    check_len("dropout output", output.len(), input.len());
    check_len("dropout mask", mask.len(), input.len());
    assert!(
        (0.0..1.0).contains(&p),
        "dropout probability {p} is not in [0, 1)"
    );
    let Some(rng) = rng else {
        output.copy_from_slice(input);
        return;
    };
    let scale = T::from_f64(1.0 / (1.0 - p));
    // Compare 32-bit uniforms against p scaled to u32: one draw per value, no floats.
    let threshold = (p * 4_294_967_296.0) as u64;
    for ((y, m), &x) in output.iter_mut().zip(mask.iter_mut()).zip(input) {
        let keep = u64::from(rng.next_u32()) >= threshold;
        *m = if keep { scale } else { T::ZERO };
        *y = x * *m;
    }
}

/// [`dropout_forward`] for one rank's rows of a data-parallel step: `shard` is
/// `(first, rows, total)` ([`Pass::shard`](crate::Pass::shard)), and the mask is the
/// part for rows `first..first + rows` of the mask a pass over all `total` rows would
/// draw, the generator left where that pass would leave it. The values of a row are
/// contiguous (`input.len() / rows` of them), and one draw is made per value.
///
/// # Panics
/// As [`dropout_forward`], or if the input is not `rows` rows.
pub fn dropout_forward_shard<T: Float>(
    output: &mut [T],
    mask: &mut [T],
    input: &[T],
    p: f64,
    rng: Option<&mut Rng>,
    shard: Option<(usize, usize, usize)>,
) {
    let (rng, (first, rows, total)) = match (rng, shard) {
        (Some(rng), Some(shard)) => (rng, shard),
        // Inference, or a pass over a whole batch.
        (rng, _) => return dropout_forward(output, mask, input, p, rng),
    };
    assert!(
        rows > 0 && input.len().is_multiple_of(rows) && first + rows <= total,
        "dropout over rows {first}..{} of {total}",
        first + rows
    );
    let per_row = (input.len() / rows) as u128;
    let start = rng.get_word_pos();
    rng.set_word_pos(start + first as u128 * per_row);
    dropout_forward(output, mask, input, p, Some(&mut *rng));
    rng.set_word_pos(start + total as u128 * per_row);
}

/// `grad_input (=|+=) grad_output ⊙ mask`.
///
/// # Panics
/// If the lengths differ.
pub fn dropout_backward<T: Float>(
    grad_input: &mut [T],
    accum: Accum,
    mask: &[T],
    grad_output: &[T],
) {
    check_len("dropout grad_input", grad_input.len(), mask.len());
    check_len("dropout grad_output", grad_output.len(), mask.len());
    for ((gi, &m), &g) in grad_input.iter_mut().zip(mask).zip(grad_output) {
        store(gi, g * m, accum);
    }
}

#[cfg(test)]
mod tests {
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn shards_draw_their_rows_of_the_whole_batch_mask() {
        // 5 rows of 3 values: the whole pass, then rows 0..2 and 2..5 from the same start.
        let x = vec![1.0_f64; 15];
        let (mut y, mut whole) = (vec![0.0; 15], vec![0.0; 15]);
        let mut rng = Rng::seed_from_u64(9);
        dropout_forward(&mut y, &mut whole, &x, 0.5, Some(&mut rng));
        let after = rng.get_word_pos();
        let mut parts = Vec::new();
        for (first, rows) in [(0, 2), (2, 3)] {
            let mut rng = Rng::seed_from_u64(9);
            let (mut y, mut mask) = (vec![0.0; 3 * rows], vec![0.0; 3 * rows]);
            let shard = Some((first, rows, 5));
            dropout_forward_shard(
                &mut y,
                &mut mask,
                &x[..3 * rows],
                0.5,
                Some(&mut rng),
                shard,
            );
            assert_eq!(
                rng.get_word_pos(),
                after,
                "the generator ends where the whole pass's does"
            );
            parts.extend(mask);
        }
        assert_eq!(parts, whole);
    }

    #[test]
    fn keeps_about_one_minus_p_and_preserves_the_mean() {
        let n = 100_000;
        let x = vec![1.0_f64; n];
        let mut y = vec![0.0; n];
        let mut mask = vec![0.0; n];
        let mut rng = Rng::seed_from_u64(3);
        dropout_forward(&mut y, &mut mask, &x, 0.25, Some(&mut rng));
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        assert!((kept - 0.75).abs() < 0.01, "kept {kept}");
        let mean = y.iter().sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.02, "mean {mean}");

        let mut gx = vec![0.0; n];
        dropout_backward(&mut gx, Accum::Replace, &mask, &x);
        assert_eq!(gx, y, "d(sum y)/dx is the mask itself");
    }

    #[test]
    fn inference_is_the_identity() {
        let x = [1.0_f32, -2.0, 3.0];
        let mut y = [0.0; 3];
        dropout_forward(&mut y, &mut [0.0; 3], &x, 0.9, None);
        assert_eq!(x, y);
    }

    #[test]
    fn zero_probability_keeps_everything() {
        let x = [1.0_f32; 64];
        let mut y = [0.0; 64];
        dropout_forward(
            &mut y,
            &mut [0.0; 64],
            &x,
            0.0,
            Some(&mut Rng::seed_from_u64(1)),
        );
        assert_eq!(x, y);
    }
}
