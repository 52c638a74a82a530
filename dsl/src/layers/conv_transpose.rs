//! `ConvTranspose2d(out_channels, kernel, stride, padding, dilation, output_padding,
//! bias)` over `[channels, height, width]`, PyTorch's `nn.ConvTranspose2d` (`weight:
//! [in, out, kh, kw]`): the decoder's learnt upsampling.

use std::ops::Range;

use proc_macro2::TokenStream;
use quote::quote;

use super::activation::Act;
use super::conv::{image, pair, shape_tokens, window, window_attrs, Geometry, Window};
use super::onnx::{attr_ints, node, param, reshape_input, temp, value_node, StepShapes};
use super::{
    arg, layer, optional_params, size, slice, split_grads, ArgKind, Call, Checked, GradFlow,
    LayerSpec, Op, Step,
};
use crate::check::{dims, Checker, Layer};
use crate::codegen::{InitPlan, Plan};

pub const SPECS: &[LayerSpec] = &[layer(
    "ConvTranspose2d",
    &[
        arg("out_channels", ArgKind::Int, true),
        arg("kernel", ArgKind::Pair, true),
        arg("stride", ArgKind::Pair, false),
        arg("padding", ArgKind::Pair, false),
        arg("dilation", ArgKind::Pair, false),
        arg("output_padding", ArgKind::Pair, false),
        arg("bias", ArgKind::Bool, false),
    ],
    "`ConvTranspose2d(16, kernel = 2, stride = 2)` or `ConvTranspose2d(16, kernel = 3, stride = 2, padding = 1, output_padding = 1)`",
    check,
)];

struct ConvTranspose2d {
    out_channels: usize,
    window: Window,
    bias: bool,
}

fn check(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let name = &call.name;
    let out_channels = call.int(0);
    if out_channels == 0 {
        checker.push(
            call.arg_span(0),
            format!("{name}: transposed convolution needs at least 1 output channel"),
        );
        return None;
    }
    let window = window(checker, call, 1, true, false)?;
    let output_padding = call.values[5].as_ref().map_or((0, 0), |v| v.pair());
    // Rule: output_padding only picks among the sizes a stride maps onto the same
    // input size, so it is smaller than the stride.
    if output_padding.0 >= window.stride.0 || output_padding.1 >= window.stride.1 {
        checker.push(
            call.arg_span(5),
            format!(
                "{name}: output_padding {} must be smaller than the stride {}",
                pair(output_padding),
                pair(window.stride)
            ),
        );
        return None;
    }
    let bias = call.flag(6, true);
    let input = call.input.as_ref()?;
    if !image(checker, name, "transposed convolution", input, call.span()) {
        return None;
    }
    super::conv::window_fits(checker, name, input[0], window.kernel, call.span())?;
    // out = (in − 1)·stride + dilation·(kernel − 1) + output_padding + 1 − 2·padding.
    let full =
        |i: usize, k: usize, s: usize, d: usize, op: usize| (i - 1) * s + d * (k - 1) + op + 1;
    let w = &window;
    let full = (
        full(
            input[1],
            w.kernel.0,
            w.stride.0,
            w.dilation.0,
            output_padding.0,
        ),
        full(
            input[2],
            w.kernel.1,
            w.stride.1,
            w.dilation.1,
            output_padding.1,
        ),
    );
    // Rule: the padding cropped off both sides leaves at least one row and column.
    if 2 * w.padding.0 >= full.0 || 2 * w.padding.1 >= full.1 {
        checker.push(
            call.arg_span(3),
            format!(
                "{name}: padding {} crops away the whole {} output of input {}",
                pair(w.padding),
                pair(full),
                dims(input)
            ),
        );
        return None;
    }
    let out = (full.0 - 2 * w.padding.0, full.1 - 2 * w.padding.1);
    Some((
        Box::new(ConvTranspose2d {
            out_channels,
            window,
            bias,
        }),
        vec![out_channels, out.0, out.1],
    ))
}

impl ConvTranspose2d {
    /// The convolution this layer transposes: from the output back to the input.
    fn geometry(&self, layer: &Layer) -> Geometry {
        Geometry {
            in_channels: layer.output[0],
            in_size: (layer.output[1], layer.output[2]),
            out_channels: layer.input[0],
            kernel: self.window.kernel,
            stride: self.window.stride,
            padding: self.window.padding,
            dilation: self.window.dilation,
            out_size: (layer.input[1], layer.input[2]),
        }
    }
}

impl Op for ConvTranspose2d {
    fn params(&self, layer: &Layer) -> usize {
        layer.input[0] * self.out_channels * self.window.kernel.0 * self.window.kernel.1
            + if self.bias { self.out_channels } else { 0 }
    }

    fn flops(&self, layer: &Layer) -> u64 {
        // A multiply-add per input value, tap and output channel, and the bias.
        let taps = self.window.kernel.0 * self.window.kernel.1;
        (2 * size(&layer.input) * taps * self.out_channels
            + usize::from(self.bias) * size(&layer.output)) as u64
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let name = &layer.name;
        let geometry = self.geometry(layer);
        // PyTorch's fan-in for this weight: its second dimension times the kernel area.
        let k = geometry.k();
        let fan_in = InitPlan::FanIn(k);
        let (kh, kw) = self.window.kernel;
        let shape = vec![layer.input[0], self.out_channels, kh, kw];
        let weight = plan.param(format!("{name}.weight"), shape, fan_in, true);
        let bias = self.bias.then(|| {
            plan.param(
                format!("{name}.bias"),
                vec![self.out_channels],
                fan_in,
                false,
            )
        });
        let output = plan.node(size(&layer.output));
        let cols = plan.node(geometry.cols_len());
        let partial = plan.fixed(geometry.transposed_partial_len());
        plan.push(ConvTransposeStep {
            input,
            output,
            cols,
            geometry,
            weight,
            bias,
            partial,
        });
        output
    }
}

struct ConvTransposeStep {
    input: usize,
    output: usize,
    cols: usize,
    geometry: Geometry,
    weight: Range<usize>,
    bias: Option<Range<usize>>,
    partial: Range<usize>,
}

impl Step for ConvTransposeStep {
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

    fn onnx(&self, shapes: &StepShapes) -> Option<Vec<TokenStream>> {
        // The geometry is the convolution this layer transposes (from its output).
        let g = &self.geometry;
        let out = self.output;
        let extra = |out_size: usize, in_size: usize, k: usize, s: usize, p: usize, d: usize| {
            (out_size + 2 * p) as i64 - ((in_size - 1) * s + d * (k - 1) + 1) as i64
        };
        let output_padding = [
            extra(
                g.in_size.0,
                g.out_size.0,
                g.kernel.0,
                g.stride.0,
                g.padding.0,
                g.dilation.0,
            ),
            extra(
                g.in_size.1,
                g.out_size.1,
                g.kernel.1,
                g.stride.1,
                g.padding.1,
                g.dilation.1,
            ),
        ];
        let mut attrs = window_attrs(g, false);
        attrs.push(attr_ints("output_padding", &output_padding));
        let mut inputs = vec![temp(out, 0), param(self.weight.start)];
        inputs.extend(self.bias.as_ref().map(|b| param(b.start)));
        Some(vec![
            reshape_input(self.input, out, shapes.input),
            node("ConvTranspose", &inputs, value_node(out), &attrs),
        ])
    }

    fn forward(&self) -> TokenStream {
        let ConvTransposeStep {
            input,
            output,
            cols,
            ..
        } = self;
        let shape = shape_tokens(&self.geometry);
        let (weight, bias) = (slice(&self.weight), optional_params(&self.bias));
        quote! {
            {
                let io = ws.forward_io(#input, #output, ::core::option::Option::Some(#cols));
                ::kiln::__private::layers::conv_transpose2d_forward::<T>(
                    #shape, io.output, io.aux, io.input, &params[#weight], #bias, batch,
                );
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let ConvTransposeStep {
            input,
            output,
            cols,
            ..
        } = self;
        let shape = shape_tokens(&self.geometry);
        let grad_input = flow.optional(*input, quote!(io.grad_input));
        let (split, grad_bias) = split_grads(&self.weight, &self.bias);
        let (weight, partial) = (slice(&self.weight), slice(&self.partial));
        quote! {
            {
                let io = ws.backward_io(#input, #output, ::core::option::Option::Some(#cols));
                #split
                ::kiln::__private::layers::conv_transpose2d_backward::<T>(
                    #shape, #grad_input, grad_weight, #grad_bias, &mut io.fixed[#partial],
                    io.aux, io.input, &params[#weight], io.grad_output, batch,
                );
            }
        }
    }
}
