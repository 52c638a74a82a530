//! `Dense(units, bias)`: `y = x Wᵀ + b` over the last axis, PyTorch's `nn.Linear`
//! (`weight: [units, in]`, `bias: [units]`), with a following fusable activation
//! applied in its epilogue.

use std::ops::Range;

use proc_macro2::TokenStream;
use quote::quote;

use super::activation::{activation, Act};
use super::onnx::{
    attr_int, attr_ints, node, param, reshape_input, temp, with_activation, StepShapes,
};
use super::{
    arg, layer, optional_params, size, slice, split_grads, split_weight_bias, ArgKind, Call,
    Checked, DeferredWeight, GradFlow, LayerSpec, Op, Step,
};
use crate::check::{dims, Checker, Layer};
use crate::codegen::{InitPlan, Plan};

pub const SPECS: &[LayerSpec] = &[layer(
    "Dense",
    &[
        arg("units", ArgKind::Int, true),
        arg("bias", ArgKind::Bool, false),
    ],
    "`Dense(128)` or `Dense(128, bias = false)`",
    check,
)];

struct Dense {
    units: usize,
    bias: bool,
}

fn check(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let name = &call.name;
    let units = call.int(0);
    if units == 0 {
        checker.push(
            call.arg_span(0),
            format!("{name}: dense needs at least 1 unit"),
        );
        return None;
    }
    let bias = call.flag(1, true);
    let input = call.input.as_ref()?;
    // Rule: dense maps the last axis and needs [features] or [steps, features].
    if input.len() > 2 {
        checker.push(
            call.span(),
            format!(
                "{name}: dense expects [features] or [steps, features] but gets {}; insert `Flatten` before it",
                dims(input)
            ),
        );
        return None;
    }
    let mut output = input.clone();
    *output.last_mut().expect("input rank is at least 1") = units;
    Some((Box::new(Dense { units, bias }), output))
}

impl Dense {
    fn in_features(layer: &Layer) -> usize {
        *layer.input.last().expect("rank >= 1")
    }
}

impl Op for Dense {
    fn params(&self, layer: &Layer) -> usize {
        self.units * Self::in_features(layer) + if self.bias { self.units } else { 0 }
    }

    fn flops(&self, layer: &Layer) -> u64 {
        let in_features = Self::in_features(layer);
        let rows = size(&layer.output) / self.units;
        (rows * (2 * in_features * self.units + if self.bias { self.units } else { 0 })) as u64
    }

    fn takes_activation(&self) -> bool {
        true
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, fused: Option<Act>) -> usize {
        let name = &layer.name;
        let in_features = Self::in_features(layer);
        let fan_in = InitPlan::FanIn(in_features);
        let weight = plan.param(
            format!("{name}.weight"),
            vec![self.units, in_features],
            fan_in,
            true,
        );
        let bias = self
            .bias
            .then(|| plan.param(format!("{name}.bias"), vec![self.units], fan_in, false));
        let output = plan.node(size(&layer.output));
        plan.push(DenseStep {
            input,
            output,
            in_features,
            out_features: self.units,
            rows_per_sample: size(&layer.input) / in_features,
            weight,
            bias,
            fused,
        });
        output
    }
}

struct DenseStep {
    input: usize,
    output: usize,
    in_features: usize,
    out_features: usize,
    rows_per_sample: usize,
    weight: Range<usize>,
    bias: Option<Range<usize>>,
    fused: Option<Act>,
}

/// `batch` rows, or `batch * steps` for a dense layer applied per step.
fn rows(rows_per_sample: usize) -> TokenStream {
    if rows_per_sample == 1 {
        quote!(batch)
    } else {
        quote!(batch * #rows_per_sample)
    }
}

impl Step for DenseStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn param_ranges(&self) -> Vec<Range<usize>> {
        std::iter::once(self.weight.clone())
            .chain(self.bias.clone())
            .collect()
    }

    fn updates_inside(&self) -> bool {
        true
    }

    fn deferred_weight(&self) -> Option<DeferredWeight> {
        Some(DeferredWeight {
            weight: self.weight.clone(),
            input: self.input,
            output: self.output,
            in_features: self.in_features,
            activation: self.fused,
        })
    }

    fn onnx(&self, _: &StepShapes) -> Option<Vec<TokenStream>> {
        let (input, output, out) = (self.input, self.output, self.output);
        let weight = param(self.weight.start);
        let bias = self.bias.as_ref().map(|b| param(b.start));
        if self.rows_per_sample == 1 {
            let mut nodes = vec![reshape_input(input, output, &[self.in_features])];
            let mut inputs = vec![temp(out, 0), weight];
            inputs.extend(bias);
            let transposed = [attr_int("transB", 1)];
            nodes.extend(with_activation(
                |to| node("Gemm", &inputs, to, &transposed),
                self.fused,
                out,
                1,
            ));
            return Some(nodes);
        }
        // Rows of a sequence: `x · Wᵀ (+ b)` on `[batch, rows, in]`.
        let mut nodes = vec![
            reshape_input(input, output, &[self.rows_per_sample, self.in_features]),
            node(
                "Transpose",
                &[weight],
                temp(out, 10),
                &[attr_ints("perm", &[1, 0])],
            ),
        ];
        let product = |to| node("MatMul", &[temp(out, 0), temp(out, 10)], to, &[]);
        match bias {
            None => nodes.extend(with_activation(product, self.fused, out, 1)),
            Some(bias) => {
                nodes.push(product(temp(out, 11)));
                nodes.extend(with_activation(
                    |to| node("Add", &[temp(out, 11), bias], to, &[]),
                    self.fused,
                    out,
                    1,
                ));
            }
        }
        Some(nodes)
    }

    fn forward(&self) -> TokenStream {
        let DenseStep {
            input,
            output,
            in_features,
            out_features,
            ..
        } = self;
        let layers = quote!(::kiln::__private::layers);
        let none = quote!(::core::option::Option::None);
        let rows = rows(self.rows_per_sample);
        let act = activation(self.fused);
        let (weight, bias) = (slice(&self.weight), optional_params(&self.bias));
        quote! {
            {
                let io = ws.forward_io(#input, #output, #none);
                #layers::dense_forward::<T, #in_features, #out_features>(
                    io.output, io.input, &params[#weight], #bias, #act, #rows,
                );
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let DenseStep {
            input,
            output,
            in_features,
            out_features,
            ..
        } = self;
        let layers = quote!(::kiln::__private::layers);
        let some = quote!(::core::option::Option::Some);
        let none = quote!(::core::option::Option::None);
        let rows = rows(self.rows_per_sample);
        let act = activation(self.fused);
        let grad_input = flow.optional(*input, quote!(io.grad_input));
        let (split, grad_bias) = split_grads(&self.weight, &self.bias);
        let (split_params, bias) = split_weight_bias(
            quote!(params),
            quote!(weight),
            quote!(bias),
            &self.weight,
            &self.bias,
        );
        let weight = slice(&self.weight);
        let deferred_bias = match &self.bias {
            Some(bias) => {
                let bias = slice(bias);
                quote!(#some(&mut grads[#bias]))
            }
            None => none.clone(),
        };
        quote! {
            {
                let deferring = ws.deferring();
                let noting = ws.noting();
                let io = ws.backward_io(#input, #output, #none);
                if let #some(rate) = update {
                    #split_params
                    #layers::dense_backward_update::<T, #in_features, #out_features>(
                        #grad_input, weight, #bias, rate, io.input, io.output,
                        io.grad_output, #act, #rows,
                    );
                } else if deferring {
                    let maxima = #layers::dense_backward_deferred::<T, #in_features, #out_features>(
                        #grad_input, #deferred_bias, io.input, &params[#weight],
                        io.output, io.grad_output, #act, #rows,
                    );
                    ws.note(#output, maxima);
                } else if noting {
                    #split
                    let maxima = #layers::dense_backward_noting::<T, #in_features, #out_features>(
                        #grad_input, grad_weight, #grad_bias, io.input, &params[#weight],
                        io.output, io.grad_output, #act, #rows,
                    );
                    ws.note(#output, maxima);
                } else {
                    #split
                    #layers::dense_backward::<T, #in_features, #out_features>(
                        #grad_input, grad_weight, #grad_bias, io.input, &params[#weight],
                        io.output, io.grad_output, #act, #rows,
                    );
                }
            }
        }
    }
}
