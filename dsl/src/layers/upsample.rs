//! `Upsample(scale, mode)` over `[channels, height, width]`, PyTorch's `nn.Upsample`
//! with a whole `scale_factor` (one, or a `(height, width)` pair) and `mode = nearest`
//! (the default) or `mode = bilinear` (`align_corners = False`).

use proc_macro2::TokenStream;
use quote::quote;

use super::activation::Act;
use super::conv::{image, pair};
use super::onnx::{absent, attr_str, floats, node, reshape_input, temp, value_node, StepShapes};
use super::{arg, layer, size, ArgKind, Call, Checked, GradFlow, LayerSpec, Op, Step};
use crate::check::{Checker, Layer};
use crate::codegen::Plan;

const MODES: &[&str] = &["nearest", "bilinear"];

pub const SPECS: &[LayerSpec] = &[layer(
    "Upsample",
    &[
        arg("scale", ArgKind::Pair, true),
        arg("mode", ArgKind::Choice(MODES), false),
    ],
    "`Upsample(2)` or `Upsample(2, mode = bilinear)`",
    check,
)];

struct Upsample {
    scale: (usize, usize),
    bilinear: bool,
}

fn check(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let name = &call.name;
    let scale = call.values[0].as_ref().map_or((0, 0), |v| v.pair());
    if scale.0 == 0 || scale.1 == 0 {
        checker.push(
            call.arg_span(0),
            format!("{name}: scale must be at least 1, got {}", pair(scale)),
        );
        return None;
    }
    let bilinear = MODES[call.choice(1)] == "bilinear";
    let input = call.input.as_ref()?;
    if !image(checker, name, "upsampling", input, call.span()) {
        return None;
    }
    Some((
        Box::new(Upsample { scale, bilinear }),
        vec![input[0], input[1] * scale.0, input[2] * scale.1],
    ))
}

impl Op for Upsample {
    fn flops(&self, layer: &Layer) -> u64 {
        // Bilinear: a multiply-add for each of four taps (a copy for nearest).
        (size(&layer.output) * if self.bilinear { 8 } else { 1 }) as u64
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let output = plan.node(size(&layer.output));
        let (channels, h, w) = (layer.input[0], layer.input[1], layer.input[2]);
        let (sh, sw) = self.scale;
        let mode = if self.bilinear {
            quote!(Bilinear)
        } else {
            quote!(Nearest)
        };
        let shape = quote! {
            &::kiln::__private::layers::UpsampleShape {
                channels: #channels,
                in_size: (#h, #w),
                scale: (#sh, #sw),
                mode: ::kiln::__private::layers::Interpolation::#mode,
            }
        };
        plan.push(UpsampleStep {
            input,
            output,
            shape,
            scale: self.scale,
            bilinear: self.bilinear,
        });
        output
    }
}

struct UpsampleStep {
    input: usize,
    output: usize,
    /// `&UpsampleShape { .. }`, a promoted constant.
    shape: TokenStream,
    scale: (usize, usize),
    bilinear: bool,
}

impl Step for UpsampleStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn onnx(&self, shapes: &StepShapes) -> Option<Vec<TokenStream>> {
        let out = self.output;
        let (sh, sw) = (self.scale.0 as f32, self.scale.1 as f32);
        let attrs = if self.bilinear {
            vec![
                attr_str("mode", "linear"),
                attr_str("coordinate_transformation_mode", "half_pixel"),
            ]
        } else {
            vec![
                attr_str("mode", "nearest"),
                attr_str("coordinate_transformation_mode", "asymmetric"),
                attr_str("nearest_mode", "floor"),
            ]
        };
        let inputs = [temp(out, 0), absent(), floats(&[1.0, 1.0, sh, sw])];
        Some(vec![
            reshape_input(self.input, out, shapes.input),
            node("Resize", &inputs, value_node(out), &attrs),
        ])
    }

    fn forward(&self) -> TokenStream {
        let UpsampleStep {
            input,
            output,
            shape,
            ..
        } = self;
        quote! {
            {
                let io = ws.forward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::upsample_forward::<T>(#shape, io.output, io.input, batch);
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let UpsampleStep {
            input,
            output,
            shape,
            ..
        } = self;
        let accum = flow.accum_or_replace(*input);
        quote! {
            {
                let io = ws.backward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::upsample_backward::<T>(#shape, io.grad_input, #accum, io.grad_output, batch);
            }
        }
    }
}
