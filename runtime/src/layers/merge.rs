//! Merging the branches of a block: concatenation (`Concat`), element-wise sum
//! (`Add`) and element-wise product (`Mul`, gating).
//!
//! | merge | forward | dL/d(branch i) |
//! | --- | --- | --- |
//! | concat | `y = [x₁ x₂ … ]` along the merged axis | the slice of `dL/dy` that `xᵢ` filled |
//! | sum | `y = f(Σ xᵢ)` | `dL/dy ⊙ f'(y)` |
//! | product | `y = Π xᵢ` | `dL/dy ⊙ Π_{j≠i} xⱼ` |
//!
//! A sum takes a following activation whose derivative can be read off its output
//! (`f` above; the identity if none follows): a ResNet block with a projection shortcut
//! ends in `Add { .. }, Relu`.
//!
//! # Shapes
//! Each branch output is `rows` rows (a row is a whole sample for `[C, H, W]` and
//! `[features]` outputs, one step for `[steps, features]`); branch `i`'s rows are
//! `widths[i]` values. A concatenation's output row is the branches' rows one after
//! another, so channels of `[C, H, W]` samples and features of each step are stacked
//! as PyTorch's `torch.cat(dim=1)` and `dim=-1` stack them. A sum or product has the
//! branches' common shape.

use super::activation::scale_by_derivative_split;
use super::{check_len, for_value_blocks, store, stored, Accum, Activation};
use crate::simd::vectorized;
use crate::Float;

/// `output` row `r` = row `r` of each input in turn.
///
/// # Panics
/// If an input is not `rows` rows of its width, or `output` not `rows` rows of their
/// sum.
pub fn concat_forward<T: Float, const N: usize>(
    output: &mut [T],
    inputs: [&[T]; N],
    widths: [usize; N],
    rows: usize,
) {
    let total: usize = widths.iter().sum();
    check_len("concat output", output.len(), rows * total);
    for (input, &width) in inputs.iter().zip(&widths) {
        check_len("concat input", input.len(), rows * width);
    }
    for (r, out) in output.chunks_exact_mut(total).enumerate() {
        let mut offset = 0;
        for (input, &width) in inputs.iter().zip(&widths) {
            out[offset..offset + width].copy_from_slice(&input[r * width..][..width]);
            offset += width;
        }
    }
}

/// `grad_input (=|+=)` columns `offset..offset + width` of each row of `grad_output`
/// (rows of `total` values): the gradient of the input that filled them.
///
/// # Panics
/// If the lengths do not match `rows`, `width` and `total`.
pub fn concat_backward<T: Float>(
    grad_input: &mut [T],
    accum: Accum,
    grad_output: &[T],
    offset: usize,
    total: usize,
) {
    let rows = grad_output.len() / total.max(1);
    check_len("concat grad_output", grad_output.len(), rows * total);
    let width = grad_input.len() / rows.max(1);
    check_len("concat grad_input", grad_input.len(), rows * width);
    assert!(offset + width <= total, "concat: columns past the row");
    for (gi, go) in grad_input
        .chunks_exact_mut(width.max(1))
        .zip(grad_output.chunks_exact(total))
    {
        match accum {
            Accum::Replace => gi.copy_from_slice(&go[offset..offset + width]),
            Accum::Add => {
                for (d, &g) in gi.iter_mut().zip(&go[offset..offset + width]) {
                    *d += g;
                }
            }
        }
    }
}

/// Backward of copying columns `offset..offset + width` of each row of `input` (rows of
/// `total` values) into `output`: writes `grad_output` into those columns of
/// `grad_input`, replacing them (a model's inputs take disjoint columns of its packed
/// input, each written once).
///
/// # Panics
/// If the lengths do not match `rows`, `width` and `total`.
pub fn slice_backward<T: Float>(
    grad_input: &mut [T],
    grad_output: &[T],
    offset: usize,
    total: usize,
) {
    let rows = grad_input.len() / total.max(1);
    check_len("slice grad_input", grad_input.len(), rows * total);
    let width = grad_output.len() / rows.max(1);
    check_len("slice grad_output", grad_output.len(), rows * width);
    assert!(offset + width <= total, "slice: columns past the row");
    for (gi, go) in grad_input
        .chunks_exact_mut(total)
        .zip(grad_output.chunks_exact(width.max(1)))
    {
        gi[offset..offset + width].copy_from_slice(go);
    }
}

/// `output = f(Σ inputs)`, element-wise, `f` a fused activation (`Identity` for none)
/// applied as the last term is added; the first two terms are added in one pass. A
/// residual block's sum is this with `[input, inner]`.
///
/// # Panics
/// If the lengths differ, or the activation is not [fusable](Activation::fusable).
pub fn sum_forward<T: Float, const N: usize>(
    output: &mut [T],
    inputs: [&[T]; N],
    activation: Activation,
) {
    for input in &inputs {
        check_len("add input", input.len(), output.len());
    }
    assert!(
        activation.fusable(),
        "a sum fuses only an activation whose derivative is a function of its output"
    );
    let flops = N.saturating_sub(1) as f64 + activation.cost();
    for_value_blocks(output, flops, N + 1, &|first, output| {
        let inputs = inputs.map(|x| &x[first..][..output.len()]);
        vectorized(
            #[inline(always)]
            || match activation {
                // With the activation a constant, the loops vectorise.
                Activation::Identity => sum_terms(output, &inputs, |v| v),
                Activation::Relu => sum_terms(output, &inputs, |v| Activation::Relu.apply(v)),
                other => sum_terms(output, &inputs, |v| other.apply(v)),
            },
        );
    });
}

/// [`sum_forward`] with `f` a constant function: `((x₀ + x₁) + x₂) + …`, in that order.
#[inline(always)]
fn sum_terms<T: Float>(output: &mut [T], inputs: &[&[T]], f: impl Fn(T) -> T) {
    match inputs {
        [] => {}
        [only] => {
            for (y, &x) in output.iter_mut().zip(*only) {
                *y = f(x);
            }
        }
        [a, b] => {
            for ((y, &a), &b) in output.iter_mut().zip(*a).zip(*b) {
                *y = f(a + b);
            }
        }
        [a, b, middle @ .., last] => {
            for ((y, &a), &b) in output.iter_mut().zip(*a).zip(*b) {
                *y = a + b;
            }
            for input in middle {
                for (y, &x) in output.iter_mut().zip(*input) {
                    *y += x;
                }
            }
            for (y, &x) in output.iter_mut().zip(*last) {
                *y = f(*y + x);
            }
        }
    }
}

/// `grad_output ⊙= f'(output)`: a sum's output gradient turned, in place, into the
/// gradient at the sum, before [`sum_backward`] hands it to each term.
///
/// # Panics
/// If the lengths differ, or the activation's derivative needs its input.
pub fn sum_activation_backward<T: Float>(
    grad_output: &mut [T],
    output: &[T],
    activation: Activation,
) {
    scale_by_derivative_split(grad_output, output, activation);
}

/// `grad_input (=|+=) grad_output`: every term of a sum has the sum's gradient.
///
/// # Panics
/// If the lengths differ.
pub fn sum_backward<T: Float>(grad_input: &mut [T], accum: Accum, grad_output: &[T]) {
    check_len("add grad_input", grad_input.len(), grad_output.len());
    // Reads the gradient, stores it.
    for_value_blocks(grad_input, 1.0, 1 + stored(accum), &|first, grad_input| {
        let grad_output = &grad_output[first..][..grad_input.len()];
        vectorized(
            #[inline(always)]
            || {
                for (gi, &g) in grad_input.iter_mut().zip(grad_output) {
                    store(gi, g, accum);
                }
            },
        );
    });
}

/// `output = Π inputs`, element-wise.
///
/// # Panics
/// If the lengths differ.
pub fn product_forward<T: Float, const N: usize>(output: &mut [T], inputs: [&[T]; N]) {
    for input in &inputs {
        check_len("mul input", input.len(), output.len());
    }
    vectorized(
        #[inline(always)]
        || {
            output.copy_from_slice(inputs[0]);
            for input in &inputs[1..] {
                for (y, &x) in output.iter_mut().zip(input.iter()) {
                    *y *= x;
                }
            }
        },
    );
}

/// `grad_input (=|+=) grad_output ⊙ Π_{j≠which} inputs[j]`: the gradient of factor
/// `which` of a product (taken as a product of the others, so a zero factor elsewhere
/// is exact).
///
/// # Panics
/// If the lengths differ or `which` is not an input.
pub fn product_backward<T: Float, const N: usize>(
    grad_input: &mut [T],
    accum: Accum,
    inputs: [&[T]; N],
    which: usize,
    grad_output: &[T],
) {
    assert!(which < N, "mul: factor {which} of {N}");
    check_len("mul grad_input", grad_input.len(), grad_output.len());
    for input in &inputs {
        check_len("mul input", input.len(), grad_output.len());
    }
    vectorized(
        #[inline(always)]
        || {
            for (i, (gi, &g)) in grad_input.iter_mut().zip(grad_output).enumerate() {
                let mut others = g;
                for (j, input) in inputs.iter().enumerate() {
                    if j != which {
                        others *= input[i];
                    }
                }
                store(gi, others, accum);
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{activation_backward, activation_forward};
    use super::*;

    #[test]
    fn concat_stacks_rows_and_routes_each_slice_back() {
        // Two rows: a has width 2, b width 3.
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
        let mut y = [0.0; 10];
        concat_forward(&mut y, [&a[..], &b[..]], [2, 3], 2);
        assert_eq!(y, [1.0, 2.0, 10.0, 20.0, 30.0, 3.0, 4.0, 40.0, 50.0, 60.0]);
        let g: Vec<f64> = (0..10).map(f64::from).collect();
        let mut ga = [0.0; 4];
        concat_backward(&mut ga, Accum::Replace, &g, 0, 5);
        assert_eq!(ga, [0.0, 1.0, 5.0, 6.0]);
        let mut gb = [1.0; 6];
        concat_backward(&mut gb, Accum::Add, &g, 2, 5);
        assert_eq!(gb, [3.0, 4.0, 5.0, 8.0, 9.0, 10.0]);
    }

    #[test]
    fn sum_and_product_match_finite_differences() {
        let n = 65;
        let (a, b, c) = (values(n, 1), values(n, 2), values(n, 3));
        let weights = values(n, 4);
        let loss = |a: &[f64], b: &[f64], c: &[f64], product: bool| {
            let mut y = vec![0.0; n];
            if product {
                product_forward(&mut y, [a, b, c]);
            } else {
                sum_forward(&mut y, [a, b, c], Activation::Identity);
            }
            dot(&y, &weights)
        };
        for product in [false, true] {
            for which in 0..3 {
                let mut g = vec![0.0; n];
                if product {
                    product_backward(&mut g, Accum::Replace, [&a[..], &b, &c], which, &weights);
                } else {
                    sum_backward(&mut g, Accum::Replace, &weights);
                }
                let inputs = [&a, &b, &c];
                let numeric = numeric_grad(inputs[which], 1e-6, |x| {
                    let mut all = [a.clone(), b.clone(), c.clone()];
                    all[which] = x.to_vec();
                    loss(&all[0], &all[1], &all[2], product)
                });
                assert_close(&g, &numeric, 1e-8);
                // Accumulating adds onto what is there.
                let mut twice = g.clone();
                if product {
                    product_backward(&mut twice, Accum::Add, [&a[..], &b, &c], which, &weights);
                } else {
                    sum_backward(&mut twice, Accum::Add, &weights);
                }
                let doubled: Vec<f64> = g.iter().map(|v| 2.0 * v).collect();
                assert_close(&twice, &doubled, 1e-15);
            }
        }
    }

    /// A fused activation gives the values of the sum and then the activation layer,
    /// bit for bit, for two terms and for three.
    #[test]
    fn fused_activation_is_the_sum_then_the_activation() {
        let n = 37;
        let (a, b, c, g) = (values(n, 5), values(n, 6), values(n, 7), values(n, 8));
        for activation in FUSABLE {
            for terms in [&[&a[..], &b][..], &[&a[..], &b, &c]] {
                let forward = |act| {
                    let mut y = vec![0.0; n];
                    match terms {
                        [a, b] => sum_forward(&mut y, [a, b], act),
                        [a, b, c] => sum_forward(&mut y, [a, b, c], act),
                        _ => unreachable!(),
                    }
                    y
                };
                let sum = forward(Activation::Identity);
                let mut y = vec![0.0; n];
                activation_forward(activation, &mut y, &sum);
                assert_eq!(forward(activation), y, "{activation:?} forward");
                let mut unfused = vec![0.0; n];
                activation_backward(activation, &mut unfused, Accum::Replace, &sum, &y, &g);
                let mut fused = g.clone();
                sum_activation_backward(&mut fused, &y, activation);
                assert_eq!(fused, unfused, "{activation:?} backward");
            }
        }
    }
}
