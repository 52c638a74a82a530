//! Fully connected layers: `y = f(x Wᵀ + b)`.
//!
//! The weight is stored as PyTorch's `Linear` stores it, `[out, in]` row-major, so a
//! state dict loads as it is. An optional activation `f` whose derivative can be read
//! off its output ([`Activation::fusable`]) is applied in the same pass that adds the
//! bias, right after the GEMM, while the rows are still in cache.
//!
//! # Shapes
//! - `input`: `rows x IN` (a sample of `[steps, IN]` contributes `steps` rows)
//! - `weight`: `OUT x IN`, `bias`: `OUT`
//! - `output`: `rows x OUT`
//!
//! # Initialisation
//! PyTorch's default for `Linear`: weight ~ kaiming-uniform with `a = √5`, which is
//! `U(-1/√IN, 1/√IN)`, and bias ~ `U(-1/√IN, 1/√IN)`.
//!
//! # Backward
//! With `g = grad_output ⊙ f'(y)`:
//! `grad_weight = gᵀ x`, `grad_bias = Σ_rows g`, `grad_input = g W`.

use faer::{MatMut, MatRef, Par};

use super::activation::{scale_by_derivative_noting, scale_by_derivative_split, Maxima};
use super::matmul;
use super::matvec::matvec;
use super::pair::{pair, Balance};
use super::{check_len, for_col_blocks, for_row_blocks, Accum, Activation};
use crate::simd::vectorized;
use crate::Float;

/// `output = activation(input · weightᵀ + bias)`.
///
/// # Panics
/// If `input.len() != rows * IN`, `output.len() != rows * OUT`, `weight.len() != OUT * IN`,
/// `bias` is not `OUT` long, or the activation is not fusable.
pub fn dense_forward<T: Float, const IN: usize, const OUT: usize>(
    output: &mut [T],
    input: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    activation: Activation,
    rows: usize,
) {
    check_len("dense input", input.len(), rows * IN);
    check_len("dense output", output.len(), rows * OUT);
    check_len("dense weight", weight.len(), OUT * IN);
    if let Some(bias) = bias {
        check_len("dense bias", bias.len(), OUT);
    }
    assert!(
        activation.fusable(),
        "{activation:?} cannot be fused after a GEMM"
    );
    if rows == 1 {
        // One sample (online inference): a matrix-vector product streams the weight once,
        // where a GEMM's packing and blocking would cost more than the arithmetic.
        matvec_pair(output, weight, input);
        epilogue(output, bias, activation);
        return;
    }
    let x = MatRef::from_row_major_slice(input, rows, IN);
    let weight_t = MatRef::from_row_major_slice(weight, OUT, IN).transpose();
    split_product(
        MatMut::from_row_major_slice_mut(output, rows, OUT),
        Accum::Replace,
        x,
        weight_t,
        &|first, mut y: MatMut<'_, T>| {
            // Bias and activation while the block is in cache.
            let bias = bias.map(|b| &b[first..first + y.ncols()]);
            let mut y = y
                .as_mut()
                .try_as_row_major_mut()
                .expect("rows of the output");
            for i in 0..y.nrows() {
                epilogue(y.as_mut().row_mut(i).as_slice_mut(), bias, activation);
            }
        },
    );
}

/// `dst (+)= a · b` on rayon's threads, split so that each thread streams its own share
/// of the larger operand: by rows of `a` when `a` has more rows than `b` has columns
/// (batch-1024 inference: each thread reads half the input and all of the weight), by
/// columns of `b` otherwise (training at batch 128: half the weight each, where a split
/// by rows had both threads pack and stream all of it). `then(first_col, block)` runs
/// on each finished block of `dst`, on the thread that computed it.
fn split_product<T: Float>(
    dst: MatMut<'_, T>,
    accum: Accum,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    then: &(impl Fn(usize, MatMut<'_, T>) + Sync),
) {
    let (rows, k, cols) = (a.nrows(), a.ncols(), b.ncols());
    if rows > cols {
        // Rows of `dst` are columns of its transpose.
        for_col_blocks(
            dst.transpose_mut(),
            (2 * k * cols) as f64,
            &|first_row, block: MatMut<'_, T>| {
                let mut block = block.transpose_mut();
                let a = a.subrows(first_row, block.nrows());
                matmul(block.as_mut(), accum, a, b, T::ONE, Par::Seq);
                then(0, block);
            },
        );
    } else {
        for_col_blocks(dst, (2 * k * rows) as f64, &|first_col, mut block| {
            let b = b.subcols(first_col, block.ncols());
            matmul(block.as_mut(), accum, a, b, T::ONE, Par::Seq);
            then(first_col, block);
        });
    }
}

/// Weights from this many values up are streamed by two threads at batch 1.
const PAIR_MIN_WEIGHTS: usize = 1 << 15;

/// [`matvec`] with the weight's rows in two halves, the second offered to the helper
/// thread of [`pair`](super::pair): one core streams a large weight at its L2's rate,
/// two cores twice as fast.
fn matvec_pair<T: Float>(y: &mut [T], w: &[T], x: &[T]) {
    if w.len() < PAIR_MIN_WEIGHTS || y.len() < 8 {
        matvec(y, w, x);
        return;
    }
    static BALANCE: Balance = Balance::new();
    // Whole groups of four rows, as the kernel reads them, so that every row is summed
    // as it would be on one thread.
    let mine = (y.len() - BALANCE.helper_share(y.len())) / 4 * 4;
    let (y0, y1) = y.split_at_mut(mine);
    let (w0, w1) = w.split_at(mine * x.len());
    BALANCE.record(pair(|| matvec(y0, w0, x), &mut || matvec(y1, w1, x)));
}

/// Adds the bias and applies the activation, row by row.
pub(super) fn epilogue<T: Float>(output: &mut [T], bias: Option<&[T]>, activation: Activation) {
    let width = bias.map_or(0, <[T]>::len);
    vectorized(
        #[inline(always)]
        || {
            match (bias, activation) {
                (None, Activation::Identity) => {}
                (Some(bias), Activation::Identity) => {
                    for row in output.chunks_exact_mut(width) {
                        for (y, &b) in row.iter_mut().zip(bias) {
                            *y += b;
                        }
                    }
                }
                // ReLU, the common case, with the activation a constant so the loop vectorises.
                (Some(bias), Activation::Relu) => {
                    for row in output.chunks_exact_mut(width) {
                        for (y, &b) in row.iter_mut().zip(bias) {
                            *y = Activation::Relu.apply(*y + b);
                        }
                    }
                }
                (Some(bias), act) => {
                    for row in output.chunks_exact_mut(width) {
                        for (y, &b) in row.iter_mut().zip(bias) {
                            *y = act.apply(*y + b);
                        }
                    }
                }
                (None, act) => {
                    for y in output.iter_mut() {
                        *y = act.apply(*y);
                    }
                }
            }
        },
    );
}

/// Gradients of [`dense_forward`].
///
/// `grad_output` is overwritten with `grad_output ⊙ f'(output)` (the gradient at the
/// pre-activation). `grad_weight` and `grad_bias` are replaced; `grad_input`, when
/// asked for, is replaced or accumulated as its [`Accum`] says.
///
/// # Panics
/// On any length that does not match the dimensions, as in [`dense_forward`].
pub fn dense_backward<T: Float, const IN: usize, const OUT: usize>(
    grad_input: Option<(&mut [T], Accum)>,
    grad_weight: &mut [T],
    grad_bias: Option<&mut [T]>,
    input: &[T],
    weight: &[T],
    output: &[T],
    grad_output: &mut [T],
    activation: Activation,
    rows: usize,
) {
    with_weight_gradient::<T, IN, OUT>(
        grad_input,
        grad_weight,
        grad_bias,
        input,
        weight,
        output,
        grad_output,
        activation,
        rows,
        false,
    );
}

/// [`dense_backward`] without the weight gradient, for a guarded SGD step that forms
/// it after the backward pass (with [`dense_weight_update`]): the input gradient and
/// the bias gradient as [`dense_backward`] writes them, and `grad_output` left holding
/// the gradient at the pre-activation. Returns the largest magnitudes of `output` and
/// of that gradient, taken in the pass that applies the activation's derivative (for
/// the guard's bound on the weight gradient), or `None` if either is not finite.
///
/// # Panics
/// On any length that does not match the dimensions, as in [`dense_forward`].
#[allow(clippy::too_many_arguments)]
pub fn dense_backward_deferred<T: Float, const IN: usize, const OUT: usize>(
    grad_input: Option<(&mut [T], Accum)>,
    grad_bias: Option<&mut [T]>,
    input: &[T],
    weight: &[T],
    output: &[T],
    grad_output: &mut [T],
    activation: Activation,
    rows: usize,
) -> Option<Maxima<T>> {
    backward_parts::<T, IN, OUT>(
        grad_input,
        grad_bias,
        input,
        weight,
        output,
        grad_output,
        activation,
        rows,
        true,
    )
}

/// [`dense_backward`] that also returns what [`dense_backward_deferred`] returns: for a
/// guarded step of an optimiser that reads stored gradients.
///
/// # Panics
/// On any length that does not match the dimensions, as in [`dense_forward`].
#[allow(clippy::too_many_arguments)]
pub fn dense_backward_noting<T: Float, const IN: usize, const OUT: usize>(
    grad_input: Option<(&mut [T], Accum)>,
    grad_weight: &mut [T],
    grad_bias: Option<&mut [T]>,
    input: &[T],
    weight: &[T],
    output: &[T],
    grad_output: &mut [T],
    activation: Activation,
    rows: usize,
) -> Option<Maxima<T>> {
    with_weight_gradient::<T, IN, OUT>(
        grad_input,
        grad_weight,
        grad_bias,
        input,
        weight,
        output,
        grad_output,
        activation,
        rows,
        true,
    )
}

/// [`backward_parts`], then the weight gradient `gᵀx`: [`dense_backward`] and
/// [`dense_backward_noting`].
#[allow(clippy::too_many_arguments)]
fn with_weight_gradient<T: Float, const IN: usize, const OUT: usize>(
    grad_input: Option<(&mut [T], Accum)>,
    grad_weight: &mut [T],
    grad_bias: Option<&mut [T]>,
    input: &[T],
    weight: &[T],
    output: &[T],
    grad_output: &mut [T],
    activation: Activation,
    rows: usize,
    note: bool,
) -> Option<Maxima<T>> {
    check_len("dense grad_weight", grad_weight.len(), OUT * IN);
    let maxima = backward_parts::<T, IN, OUT>(
        grad_input,
        grad_bias,
        input,
        weight,
        output,
        grad_output,
        activation,
        rows,
        note,
    );
    weight_product::<T, IN>(
        grad_weight,
        Accum::Replace,
        T::ONE,
        grad_output,
        input,
        rows,
    );
    maxima
}

/// `dst = accum(dst, alpha · gᵀ x)` for a dense weight-shaped `dst` of rows `in_features`
/// wide, where `g` holds `x.len() / in_features` rows: a deferred weight gradient
/// (`Replace`, `alpha` 1) or its SGD step (`Add`, `alpha` `−rate`).
///
/// # Panics
/// If the lengths disagree.
pub fn dense_weight_update<T: Float>(
    dst: &mut [T],
    accum: Accum,
    alpha: T,
    g: &[T],
    x: &[T],
    in_features: usize,
) {
    let rows = x.len() / in_features.max(1);
    assert!(
        in_features > 0
            && dst.len().is_multiple_of(in_features)
            && x.len() == rows * in_features
            && g.len() == rows * (dst.len() / in_features),
        "dense weight update of mismatched shapes"
    );
    weight_product_of(dst, accum, alpha, g, x, rows, in_features);
}

/// [`dense_backward`] with the update of an optimiser whose step is `p ← p − rate·g`
/// ([`linear_step`](crate::optim::Optimizer::linear_step)) applied in place of the
/// parameter gradients: the input gradient is formed first, from the weight as it was,
/// then the weight-gradient product adds `−rate·gᵀx` straight into the weight and the
/// bias takes `−rate·Σ g`. No gradient buffer is written or read back, which on the
/// 784-1024-1024-10 MLP saves streaming its 7 MB of weight gradients out and in again.
///
/// # Panics
/// On any length that does not match the dimensions, as in [`dense_forward`].
pub fn dense_backward_update<T: Float, const IN: usize, const OUT: usize>(
    grad_input: Option<(&mut [T], Accum)>,
    weight: &mut [T],
    bias: Option<&mut [T]>,
    rate: T,
    input: &[T],
    output: &[T],
    grad_output: &mut [T],
    activation: Activation,
    rows: usize,
) {
    check_len("dense weight", weight.len(), OUT * IN);
    let g = pre_activation::<T, IN, OUT>(grad_output, input, output, activation, rows);
    if let Some(bias) = bias {
        check_len("dense bias", bias.len(), OUT);
        column_sums(bias, g, |b, total| *b -= rate * total);
    }
    grad_input_product::<T, IN, OUT>(grad_input, g, weight, rows);
    weight_product::<T, IN>(weight, Accum::Add, -rate, g, input, rows);
}

/// Everything of a dense backward pass but the weight gradient: `grad_output` turned
/// into the gradient at the pre-activation (with its and the output's largest
/// magnitudes taken on the way if `note`), then the bias and input gradients.
#[allow(clippy::too_many_arguments)]
fn backward_parts<T: Float, const IN: usize, const OUT: usize>(
    grad_input: Option<(&mut [T], Accum)>,
    grad_bias: Option<&mut [T]>,
    input: &[T],
    weight: &[T],
    output: &[T],
    grad_output: &mut [T],
    activation: Activation,
    rows: usize,
    note: bool,
) -> Option<Maxima<T>> {
    check_len("dense weight", weight.len(), OUT * IN);
    check_rows::<T, IN, OUT>(input, output, grad_output, rows);
    let maxima = if note {
        scale_by_derivative_noting(grad_output, output, activation)
    } else {
        scale_by_derivative_split(grad_output, output, activation);
        None
    };
    let g = &*grad_output;
    if let Some(grad_bias) = grad_bias {
        check_len("dense grad_bias", grad_bias.len(), OUT);
        column_sums(grad_bias, g, |sum, total| *sum = total);
    }
    grad_input_product::<T, IN, OUT>(grad_input, g, weight, rows);
    maxima
}

/// Checks the lengths and turns `grad_output` into the gradient at the pre-activation.
fn pre_activation<'g, T: Float, const IN: usize, const OUT: usize>(
    grad_output: &'g mut [T],
    input: &[T],
    output: &[T],
    activation: Activation,
    rows: usize,
) -> &'g [T] {
    check_rows::<T, IN, OUT>(input, output, grad_output, rows);
    scale_by_derivative_split(grad_output, output, activation);
    grad_output
}

/// The length checks of a dense backward pass's batch-sized buffers.
fn check_rows<T, const IN: usize, const OUT: usize>(
    input: &[T],
    output: &[T],
    grad_output: &[T],
    rows: usize,
) {
    check_len("dense input", input.len(), rows * IN);
    check_len("dense output", output.len(), rows * OUT);
    check_len("dense grad_output", grad_output.len(), rows * OUT);
}

/// `apply(&mut dst[j], Σ_rows g[row, j])` for each column `j` of the row-major `g`
/// (`dst.len()` columns), summing a block of columns at a time in a buffer on the stack.
pub(super) fn column_sums<T: Float>(dst: &mut [T], g: &[T], apply: impl Fn(&mut T, T)) {
    const BLOCK: usize = 64;
    let width = dst.len();
    vectorized(
        #[inline(always)]
        || {
            for (first, block) in dst.chunks_mut(BLOCK).enumerate() {
                let first = first * BLOCK;
                let mut sums = [T::ZERO; BLOCK];
                let sums = &mut sums[..block.len()];
                for row in g.chunks_exact(width) {
                    for (sum, &v) in sums.iter_mut().zip(&row[first..]) {
                        *sum += v;
                    }
                }
                for (d, &total) in block.iter_mut().zip(sums.iter()) {
                    apply(d, total);
                }
            }
        },
    );
}

/// `grad_input (+)= g W`, split across rayon's threads.
fn grad_input_product<T: Float, const IN: usize, const OUT: usize>(
    grad_input: Option<(&mut [T], Accum)>,
    g: &[T],
    weight: &[T],
    rows: usize,
) {
    if let Some((grad_input, accum)) = grad_input {
        check_len("dense grad_input", grad_input.len(), rows * IN);
        split_product(
            MatMut::from_row_major_slice_mut(grad_input, rows, IN),
            accum,
            MatRef::from_row_major_slice(g, rows, OUT),
            MatRef::from_row_major_slice(weight, OUT, IN),
            &|_, _| {},
        );
    }
}

/// `dst = accum(dst, alpha · gᵀ x)` for the `[OUT, IN]` weight-shaped `dst`. The
/// product reduces over the batch, so it is split by its own rows (output units)
/// instead: each block is an independent single-threaded product. faer's internal
/// threading would allocate on every call.
fn weight_product<T: Float, const IN: usize>(
    dst: &mut [T],
    accum: Accum,
    alpha: T,
    g: &[T],
    input: &[T],
    rows: usize,
) {
    weight_product_of(dst, accum, alpha, g, input, rows, IN);
}

/// [`weight_product`] with the input width a run-time value.
fn weight_product_of<T: Float>(
    dst: &mut [T],
    accum: Accum,
    alpha: T,
    g: &[T],
    input: &[T],
    rows: usize,
    in_features: usize,
) {
    let units = dst.len() / in_features;
    let g = MatRef::from_row_major_slice(g, rows, units);
    let x = MatRef::from_row_major_slice(input, rows, in_features);
    for_row_blocks(
        dst,
        in_features,
        (2 * rows * in_features) as f64,
        &|first_unit, block: &mut [T]| {
            let units = block.len() / in_features;
            matmul(
                MatMut::from_row_major_slice_mut(block, units, in_features),
                accum,
                g.subcols(first_unit, units).transpose(),
                x,
                alpha,
                Par::Seq,
            );
        },
    );
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    /// The textbook triple loop the GEMM path is compared with.
    fn naive_forward(
        x: &[f64],
        w: &[f64],
        b: &[f64],
        rows: usize,
        inp: usize,
        out: usize,
    ) -> Vec<f64> {
        let mut y = vec![0.0; rows * out];
        for r in 0..rows {
            for o in 0..out {
                let mut acc = b[o];
                for i in 0..inp {
                    acc += x[r * inp + i] * w[o * inp + i];
                }
                y[r * out + o] = acc;
            }
        }
        y
    }

    fn check_sizes<const IN: usize, const OUT: usize>(rows: usize, activation: Activation) {
        let x = values(rows * IN, 1);
        let w = values(OUT * IN, 2);
        let b = values(OUT, 3);
        let mut y = vec![0.0; rows * OUT];
        dense_forward::<f64, IN, OUT>(&mut y, &x, &w, Some(&b), activation, rows);
        let expected: Vec<f64> = naive_forward(&x, &w, &b, rows, IN, OUT)
            .into_iter()
            .map(|v| activation.apply(v))
            .collect();
        assert_close(&y, &expected, 1e-12);

        // L = sum(c ⊙ y): its gradients by finite differences.
        let c = values(rows * OUT, 4);
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut y = vec![0.0; rows * OUT];
            dense_forward::<f64, IN, OUT>(&mut y, x, w, Some(b), activation, rows);
            dot(&c, &y)
        };
        let mut gx = vec![0.0; rows * IN];
        let mut gw = vec![0.0; OUT * IN];
        let mut gb = vec![0.0; OUT];
        let mut go = c.clone();
        dense_backward::<f64, IN, OUT>(
            Some((&mut gx, Accum::Replace)),
            &mut gw,
            Some(&mut gb),
            &x,
            &w,
            &y,
            &mut go,
            activation,
            rows,
        );
        let h = 1e-6;
        assert_close(&gx, &numeric_grad(&x, h, |x| loss(x, &w, &b)), 1e-7);
        assert_close(&gw, &numeric_grad(&w, h, |w| loss(&x, w, &b)), 1e-7);
        assert_close(&gb, &numeric_grad(&b, h, |b| loss(&x, &w, b)), 1e-7);

        // Deferred: the same input and bias gradients, `g` left in `grad_output`, and
        // the weight gradient (or an SGD step) formed from it afterwards.
        let (mut dx, mut db, mut g) = (vec![0.0; rows * IN], vec![0.0; OUT], c.clone());
        let maxima = dense_backward_deferred::<f64, IN, OUT>(
            Some((&mut dx, Accum::Replace)),
            Some(&mut db),
            &x,
            &w,
            &y,
            &mut g,
            activation,
            rows,
        );
        assert_eq!((&dx, &db), (&gx, &gb));
        assert_eq!(g, go, "the gradient at the pre-activation");
        // The maxima it notes are those of the output and of that gradient.
        let max = |v: &[f64]| v.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
        let maxima = maxima.expect("finite operands");
        assert_eq!((maxima.output, maxima.grad), (max(&y), max(&go)));
        // The noting variant of the full backward pass: the same gradients, the same
        // maxima.
        let (mut nx, mut nw, mut nb, mut ng) = (
            vec![0.0; rows * IN],
            vec![0.0; OUT * IN],
            vec![0.0; OUT],
            c.clone(),
        );
        let noted = dense_backward_noting::<f64, IN, OUT>(
            Some((&mut nx, Accum::Replace)),
            &mut nw,
            Some(&mut nb),
            &x,
            &w,
            &y,
            &mut ng,
            activation,
            rows,
        );
        assert_eq!((&nx, &nw, &nb, &ng), (&gx, &gw, &gb, &go));
        assert_eq!(noted, Some(maxima));
        let mut dw = vec![f64::NAN; OUT * IN];
        dense_weight_update(&mut dw, Accum::Replace, 1.0, &g, &x, IN);
        assert_eq!(dw, gw);
        let mut stepped = w.clone();
        dense_weight_update(&mut stepped, Accum::Add, -0.5, &g, &x, IN);
        let expected: Vec<f64> = w.iter().zip(&gw).map(|(w, g)| w - 0.5 * g).collect();
        assert_close(&stepped, &expected, 1e-12);
    }

    #[test]
    fn matches_naive_and_finite_differences_across_block_sizes() {
        for rows in [1, 2, 3, 63, 64, 65] {
            check_sizes::<3, 2>(rows, Activation::Identity);
            check_sizes::<65, 63>(rows, Activation::Tanh);
            check_sizes::<64, 1>(rows, Activation::Sigmoid);
        }
    }

    #[test]
    fn large_batches_split_across_threads_give_the_serial_result() {
        // Both above the threading threshold: more rows than units (split by rows), and
        // fewer (split by units).
        threaded::<256, 128>(1024);
        threaded::<256, 512>(128);
    }

    #[test]
    fn batch_1_on_two_threads_equals_one_thread() {
        // 130 rows (not a multiple of 8) of 300: above the two-thread size; then rows
        // straddling the groups of four and eight and random ones, each with enough
        // columns to be split (the single-thread kernel is checked against f64 in
        // matvec.rs), so every split the balance can choose is met.
        let mut shapes = vec![(130, 300)];
        for (i, rows) in sizes(&[8, 16, 64], 8, 300, 17).into_iter().enumerate() {
            let n = (PAIR_MIN_WEIGHTS / rows.max(8)).max(64) + i * 7;
            shapes.push((rows, n));
        }
        for (rows, n) in shapes {
            let w: Vec<f32> = values(rows * n, 13).iter().map(|&v| v as f32).collect();
            let x: Vec<f32> = values(n, 14).iter().map(|&v| v as f32).collect();
            let mut one = vec![0.0; rows];
            matvec(&mut one, &w, &x);
            for _ in 0..50 {
                let mut two = vec![f32::NAN; rows];
                matvec_pair(&mut two, &w, &x);
                assert_eq!(one, two, "{rows} x {n}");
            }
        }
    }

    fn threaded<const IN: usize, const OUT: usize>(rows: usize) {
        let x: Vec<f32> = values(rows * IN, 5).iter().map(|&v| v as f32).collect();
        let w: Vec<f32> = values(OUT * IN, 6).iter().map(|&v| v as f32).collect();
        let b: Vec<f32> = values(OUT, 8).iter().map(|&v| v as f32).collect();
        let mut parallel = vec![0.0; rows * OUT];
        dense_forward::<f32, IN, OUT>(&mut parallel, &x, &w, Some(&b), Activation::Relu, rows);
        let mut serial = vec![0.0; rows * OUT];
        for r in 0..rows {
            dense_forward::<f32, IN, OUT>(
                &mut serial[r * OUT..(r + 1) * OUT],
                &x[r * IN..(r + 1) * IN],
                &w,
                Some(&b),
                Activation::Relu,
                1,
            );
        }
        for (p, s) in parallel.iter().zip(&serial) {
            assert!((p - s).abs() <= 1e-4 * (1.0 + s.abs()), "{p} vs {s}");
        }
        // The weight gradient is split by output units, the input gradient by input
        // units: compare both with the definition.
        let go: Vec<f32> = values(rows * OUT, 7).iter().map(|&v| v as f32).collect();
        let mut gw = vec![0.0; OUT * IN];
        let mut gx = vec![f32::NAN; rows * IN];
        dense_backward::<f32, IN, OUT>(
            Some((&mut gx, Accum::Replace)),
            &mut gw,
            None,
            &x,
            &w,
            &parallel,
            &mut go.clone(),
            Activation::Identity,
            rows,
        );
        for o in (0..OUT).step_by(7) {
            for i in (0..IN).step_by(5) {
                let expected: f64 = (0..rows)
                    .map(|r| f64::from(go[r * OUT + o]) * f64::from(x[r * IN + i]))
                    .sum();
                let got = f64::from(gw[o * IN + i]);
                assert!(
                    (got - expected).abs() <= 1e-3 * (1.0 + expected.abs()),
                    "{got} vs {expected}"
                );
            }
        }
        for r in (0..rows).step_by(13) {
            for i in 0..IN {
                let expected: f64 = (0..OUT)
                    .map(|o| f64::from(go[r * OUT + o]) * f64::from(w[o * IN + i]))
                    .sum();
                let got = f64::from(gx[r * IN + i]);
                assert!(
                    (got - expected).abs() <= 1e-4 * (1.0 + expected.abs()),
                    "{got} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn accumulating_grad_input_adds() {
        let x = [1.0, 2.0];
        let w = [3.0, 4.0];
        let mut y = [0.0];
        dense_forward::<f64, 2, 1>(&mut y, &x, &w, None, Activation::Identity, 1);
        assert_eq!(y, [11.0]);
        let mut gx = [1.0, 1.0];
        let mut gw = [0.0; 2];
        dense_backward::<f64, 2, 1>(
            Some((&mut gx, Accum::Add)),
            &mut gw,
            None,
            &x,
            &w,
            &y,
            &mut [1.0],
            Activation::Identity,
            1,
        );
        assert_eq!(gx, [4.0, 5.0]);
        assert_eq!(gw, [1.0, 2.0]);
    }
}
