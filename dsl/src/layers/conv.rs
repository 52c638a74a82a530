//! `Conv2d(out_channels, kernel, stride, padding, dilation, bias, floor)` over
//! `[channels, height, width]`, PyTorch's `nn.Conv2d` (`weight: [out, in, kh, kw]`),
//! with a following fusable activation applied in its epilogue; `Conv1d` with the same
//! arguments over `[channels, length]` (`nn.Conv1d`, `weight: [out, in, k]`), which
//! runs as a convolution over a `[channels, 1, length]` image with a `1 x k` kernel;
//! and the window rules the pooling layers share.

use std::ops::Range;

use kiln_shapes::Conv2dShape;
use proc_macro2::{Span, TokenStream};
use quote::quote;

use super::activation::{activation, Act};
use super::onnx::{attr_ints, node, param, reshape_input, temp, with_activation, StepShapes};
use super::{
    arg, layer, optional_params, size, slice, split_grads, ArgKind, Call, Checked, GradFlow,
    LayerSpec, Op, Step,
};
use crate::check::{dims, Checker, Layer, Value};
use crate::codegen::{InitPlan, Plan};

pub const SPECS: &[LayerSpec] = &[
    layer(
        "Conv2d",
        &[
            arg("out_channels", ArgKind::Int, true),
            arg("kernel", ArgKind::Pair, true),
            arg("stride", ArgKind::Pair, false),
            arg("padding", ArgKind::Pair, false),
            arg("dilation", ArgKind::Pair, false),
            arg("bias", ArgKind::Bool, false),
            arg("floor", ArgKind::Bool, false),
        ],
        "`Conv2d(32, kernel = 3)` or `Conv2d(16, kernel = (3, 5), stride = 2, padding = 1)`",
        check,
    ),
    layer(
        "Conv1d",
        &[
            arg("out_channels", ArgKind::Int, true),
            arg("kernel", ArgKind::Int, true),
            arg("stride", ArgKind::Int, false),
            arg("padding", ArgKind::Int, false),
            arg("dilation", ArgKind::Int, false),
            arg("bias", ArgKind::Bool, false),
            arg("floor", ArgKind::Bool, false),
        ],
        "`Conv1d(32, kernel = 3)` or `Conv1d(16, kernel = 5, stride = 2, padding = 2)`",
        check_1d,
    ),
];

/// A convolution or pooling window as written (kernel, stride, padding, dilation as
/// `(height, width)`), and whether a stride may leave a remainder.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Window {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub floor: bool,
}

struct Conv2d {
    out_channels: usize,
    window: Window,
    bias: bool,
    /// `Conv1d`: a `[channels, length]` input, a `[out, in, k]` weight.
    one_d: bool,
}

fn check(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let name = &call.name;
    let out_channels = call.int(0);
    if out_channels == 0 {
        checker.push(
            call.arg_span(0),
            format!("{name}: conv2d needs at least 1 output channel"),
        );
        return None;
    }
    let window = window(checker, call, 1, true, call.flag(6, false))?;
    let bias = call.flag(5, true);
    let input = call.input.as_ref()?;
    let (h, w) = spatial(checker, name, "conv2d", input, &window, call.span())?;
    Some((
        Box::new(Conv2d {
            out_channels,
            window,
            bias,
            one_d: false,
        }),
        vec![out_channels, h, w],
    ))
}

/// `Conv1d`: the window of `Conv2d` with a height of 1 on every axis, checked on the
/// `[channels, 1, length]` image the runtime sees, with messages in 1-d terms.
fn check_1d(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let name = &call.name;
    let out_channels = call.int(0);
    if out_channels == 0 {
        checker.push(
            call.arg_span(0),
            format!("{name}: conv1d needs at least 1 output channel"),
        );
        return None;
    }
    let w = window(checker, call, 1, true, call.flag(6, false))?;
    let window = Window {
        kernel: (1, w.kernel.1),
        stride: (1, w.stride.1),
        padding: (0, w.padding.1),
        dilation: (1, w.dilation.1),
        floor: w.floor,
    };
    let bias = call.flag(5, true);
    let input = call.input.as_ref()?;
    // Rule: a 1-d layer needs a [channels, length] input.
    if input.len() != 2 {
        let hint = checker.vector_hint(input).unwrap_or_else(|| {
            if input.len() == 1 {
                "; declare the input as [channels, length], such as `input: [1, 16000]`".to_string()
            } else {
                String::new()
            }
        });
        checker.push(
            call.span(),
            format!(
                "{name}: conv1d expects [channels, length] but gets {}{hint}",
                dims(input)
            ),
        );
        return None;
    }
    let image = [input[0], 1, input[1]];
    let (_, length) = spatial(checker, name, "conv1d", &image, &window, call.span())?;
    Some((
        Box::new(Conv2d {
            out_channels,
            window,
            bias,
            one_d: true,
        }),
        vec![out_channels, length],
    ))
}

/// Reads kernel, stride (defaulting to the kernel for pools, 1 for convolutions),
/// padding and (for convolutions) dilation from the arguments starting at `kernel`.
/// Rule: kernel, stride and dilation are at least 1.
pub fn window(
    checker: &mut Checker,
    call: &Call,
    kernel: usize,
    is_conv: bool,
    floor: bool,
) -> Option<Window> {
    let get = |i: usize| call.values.get(i).and_then(|v| v.as_ref().map(Value::pair));
    let kernel_size = get(kernel).unwrap_or((0, 0));
    let stride = get(kernel + 1).unwrap_or(if is_conv { (1, 1) } else { kernel_size });
    let padding = get(kernel + 2).unwrap_or((0, 0));
    let dilation = if is_conv { get(kernel + 3) } else { None }.unwrap_or((1, 1));
    let mut ok = true;
    for (what, value, index) in [
        ("kernel", kernel_size, kernel),
        ("stride", stride, kernel + 1),
        ("dilation", dilation, kernel + 3),
    ] {
        if value.0 == 0 || value.1 == 0 {
            let got = if call.spec.args[index].kind == ArgKind::Int {
                value.1.to_string()
            } else {
                pair(value)
            };
            checker.push(
                call.arg_span(index),
                format!("{}: {what} must be at least 1, got {got}", call.name),
            );
            ok = false;
        }
    }
    ok.then_some(Window {
        kernel: kernel_size,
        stride,
        padding,
        dilation,
        floor,
    })
}

/// `3x3` for a square pair, `3x5` otherwise.
pub fn pair(p: (usize, usize)) -> String {
    format!("{}x{}", p.0, p.1)
}

/// Output height and width of a window over `[C, H, W]`. Rules: a 2-d layer needs a
/// `[channels, height, width]` input; the (dilated) kernel fits the padded input; no
/// row or column of the real input is left after the last window, beyond the gap the
/// stride leaves between windows, unless the layer sets `floor = true` (padding left
/// over, as in the usual `kernel = 3, stride = 2, padding = 1` on an even size, loses
/// nothing, and a 1x1 stride-2 shortcut samples every other row by design). A `kind`
/// ending in `1d` has an image of height 1 and is reported in 1-d terms.
pub fn spatial(
    checker: &mut Checker,
    name: &str,
    kind: &str,
    input: &[usize],
    w: &Window,
    at: Span,
) -> Option<(usize, usize)> {
    if !image(checker, name, kind, input, at) {
        return None;
    }
    window_fits(checker, name, input[0], w.kernel, at)?;
    let one_d = kind.ends_with("1d");
    let show = |p: (usize, usize)| if one_d { p.1.to_string() } else { pair(p) };
    let shown = if one_d {
        dims(&[input[0], input[2]])
    } else {
        dims(input)
    };
    let span = |k: usize, d: usize| d * (k - 1) + 1;
    let extent = (
        span(w.kernel.0, w.dilation.0),
        span(w.kernel.1, w.dilation.1),
    );
    let padded = (input[1] + 2 * w.padding.0, input[2] + 2 * w.padding.1);
    if extent.0 > padded.0 || extent.1 > padded.1 {
        let dilated = if w.dilation != (1, 1) {
            format!(" (spanning {} with dilation)", show(extent))
        } else {
            String::new()
        };
        let pad = if w.padding != (0, 0) {
            format!(" padded to {}", show(padded))
        } else {
            String::new()
        };
        checker.push(
            at,
            format!(
                "{name}: kernel {}{dilated} does not fit input {shown}{pad}",
                show(w.kernel),
            ),
        );
        return None;
    }
    let out = (
        (padded.0 - extent.0) / w.stride.0 + 1,
        (padded.1 - extent.1) / w.stride.1 + 1,
    );
    // Rows and columns of the real input (not of its padding) after the last window,
    // counted only past the gap a stride wider than the window leaves between any two
    // windows: a 1x1 convolution with stride 2 samples every other row by design.
    let unreached = |size: usize, pad: usize, out: usize, stride: usize, extent: usize| {
        let after = (pad + size).saturating_sub((out - 1) * stride + extent);
        if after > stride.saturating_sub(extent) {
            after
        } else {
            0
        }
    };
    let rest = (
        unreached(input[1], w.padding.0, out.0, w.stride.0, extent.0),
        unreached(input[2], w.padding.1, out.1, w.stride.1, extent.1),
    );
    if rest != (0, 0) && !w.floor {
        checker.push(
            at,
            format!(
                "{name}: stride {} does not tile input {shown}: the last {} would be left over; add `floor = true` to drop it as PyTorch does",
                show(w.stride),
                match rest {
                    (0, 1) if one_d => "position".to_string(),
                    (0, n) if one_d => format!("{n} positions"),
                    (1, _) => "row".to_string(),
                    (0, 1) => "column".to_string(),
                    (0, n) => format!("{n} columns"),
                    (n, _) => format!("{n} rows"),
                }
            ),
        );
        return None;
    }
    Some(out)
}

/// Whether `input` is `[channels, height, width]`; if not, reports that the `kind` layer
/// `name` expects one, with a hint to the layer that made a vector or to the input.
pub fn image(checker: &mut Checker, name: &str, kind: &str, input: &[usize], at: Span) -> bool {
    if input.len() == 3 {
        return true;
    }
    let hint = checker.vector_hint(input).unwrap_or_else(|| {
        if input.len() == 1 {
            "; declare the input as [channels, height, width], such as `input: [1, 28, 28]`"
                .to_string()
        } else {
            String::new()
        }
    });
    checker.push(
        at,
        format!(
            "{name}: {kind} expects [channels, height, width] but gets {}{hint}",
            dims(input)
        ),
    );
    false
}

/// Rule: a window covers at most MAX_WINDOW values (input channels times kernel
/// area).
pub fn window_fits(
    checker: &mut Checker,
    name: &str,
    channels: usize,
    kernel: (usize, usize),
    at: Span,
) -> Option<()> {
    let covered = channels
        .checked_mul(kernel.0)
        .and_then(|n| n.checked_mul(kernel.1));
    if covered.is_some_and(|n| n <= crate::check::MAX_WINDOW) {
        return Some(());
    }
    checker.push(
        at,
        format!(
            "{name}: a window of {channels} channels by {} is larger than kiln takes (at most {} values)",
            pair(kernel),
            crate::check::MAX_WINDOW
        ),
    );
    None
}

/// The layer's `Conv2dShape`, the geometry the runtime's kernels take: the macro
/// sizes the column node and the scratch with its functions and emits it as a
/// constant.
pub type Geometry = Conv2dShape;

/// A convolution's or a pool's geometry from its layer's shapes.
/// A 1-d layer's `[channels, length]` is an image of height 1.
pub fn geometry(layer: &Layer, window: &Window) -> Geometry {
    let size = |dims: &[usize]| match *dims {
        [_, length] => (1, length),
        _ => (dims[1], dims[2]),
    };
    Conv2dShape {
        in_channels: layer.input[0],
        in_size: size(&layer.input),
        out_channels: layer.output[0],
        kernel: window.kernel,
        stride: window.stride,
        padding: window.padding,
        dilation: window.dilation,
        out_size: size(&layer.output),
    }
}

/// ONNX's `kernel_shape`, `strides`, `pads` (begin and end of each axis) and
/// `dilations` of a window; of its width alone for a 1-d layer (`one_d`).
pub fn window_attrs(g: &Geometry, one_d: bool) -> Vec<TokenStream> {
    let axes = |(h, w): (usize, usize)| -> Vec<i64> {
        if one_d {
            vec![w as i64]
        } else {
            vec![h as i64, w as i64]
        }
    };
    let pads = axes(g.padding);
    vec![
        attr_ints("kernel_shape", &axes(g.kernel)),
        attr_ints("strides", &axes(g.stride)),
        attr_ints("pads", &[pads.clone(), pads].concat()),
        attr_ints("dilations", &axes(g.dilation)),
    ]
}

/// `&::kiln::__private::layers::Conv2dShape { .. }`, a promoted constant.
pub fn shape_tokens(shape: &Geometry) -> TokenStream {
    let Conv2dShape {
        in_channels,
        in_size: (ih, iw),
        out_channels,
        kernel: (kh, kw),
        stride: (sh, sw),
        padding: (ph, pw),
        dilation: (dh, dw),
        out_size: (oh, ow),
    } = *shape;
    quote! {
        &::kiln::__private::layers::Conv2dShape {
            in_channels: #in_channels,
            in_size: (#ih, #iw),
            out_channels: #out_channels,
            kernel: (#kh, #kw),
            stride: (#sh, #sw),
            padding: (#ph, #pw),
            dilation: (#dh, #dw),
            out_size: (#oh, #ow),
        }
    }
}

impl Op for Conv2d {
    fn params(&self, layer: &Layer) -> usize {
        self.out_channels * layer.input[0] * self.window.kernel.0 * self.window.kernel.1
            + if self.bias { self.out_channels } else { 0 }
    }

    fn flops(&self, layer: &Layer) -> u64 {
        let k = layer.input[0] * self.window.kernel.0 * self.window.kernel.1;
        (size(&layer.output) * (2 * k + usize::from(self.bias))) as u64
    }

    fn takes_activation(&self) -> bool {
        true
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, fused: Option<Act>) -> usize {
        let name = &layer.name;
        let geometry = geometry(layer, &self.window);
        let k = geometry.k();
        let fan_in = InitPlan::FanIn(k);
        let shape = if self.one_d {
            vec![
                self.out_channels,
                geometry.in_channels,
                self.window.kernel.1,
            ]
        } else {
            vec![
                self.out_channels,
                geometry.in_channels,
                self.window.kernel.0,
                self.window.kernel.1,
            ]
        };
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
        // Rebuilt columns need one sample's scratch per thread; kept ones a node.
        let cols = if geometry.rebuilds_columns() {
            Cols::Scratch(plan.fixed(geometry.cols_scratch_len()))
        } else {
            Cols::Node(plan.node(geometry.cols_len()))
        };
        let partial = plan.fixed(geometry.partial_len());
        plan.push(ConvStep {
            input,
            output,
            cols,
            geometry,
            weight,
            bias,
            fused,
            partial,
            one_d: self.one_d,
        });
        output
    }
}

/// Where a convolution's columns live (`Conv2dShape::rebuilds_columns`).
enum Cols {
    /// One sample's columns per thread in the fixed scratch, rebuilt in backward.
    Scratch(Range<usize>),
    /// The whole batch's columns in a workspace node, kept for backward.
    Node(usize),
}

impl Cols {
    /// The auxiliary node to ask the workspace for, and the expression of the columns'
    /// slice in the pass's `io`.
    fn io(&self) -> (TokenStream, TokenStream) {
        match self {
            Cols::Scratch(range) => {
                let range = slice(range);
                (
                    quote!(::core::option::Option::None),
                    quote!(&mut io.fixed[#range]),
                )
            }
            Cols::Node(node) => (quote!(::core::option::Option::Some(#node)), quote!(io.aux)),
        }
    }
}

struct ConvStep {
    input: usize,
    output: usize,
    cols: Cols,
    geometry: Geometry,
    weight: Range<usize>,
    bias: Option<Range<usize>>,
    fused: Option<Act>,
    partial: Range<usize>,
    one_d: bool,
}

impl Step for ConvStep {
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
        let g = &self.geometry;
        let out = self.output;
        let mut inputs = vec![temp(out, 0), param(self.weight.start)];
        inputs.extend(self.bias.as_ref().map(|b| param(b.start)));
        let attrs = window_attrs(g, self.one_d);
        let mut nodes = vec![reshape_input(self.input, out, shapes.input)];
        nodes.extend(with_activation(
            |to| node("Conv", &inputs, to, &attrs),
            self.fused,
            out,
            1,
        ));
        Some(nodes)
    }

    fn forward(&self) -> TokenStream {
        let ConvStep { input, output, .. } = self;
        let (shape, act) = (shape_tokens(&self.geometry), activation(self.fused));
        let (weight, bias) = (slice(&self.weight), optional_params(&self.bias));
        let (aux, cols) = self.cols.io();
        quote! {
            {
                let io = ws.forward_io(#input, #output, #aux);
                ::kiln::__private::layers::conv2d_forward::<T>(
                    #shape, io.output, #cols, io.input, &params[#weight], #bias, #act, batch,
                );
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let ConvStep { input, output, .. } = self;
        let (shape, act) = (shape_tokens(&self.geometry), activation(self.fused));
        let grad_input = flow.optional(*input, quote!(io.grad_input));
        let (split, grad_bias) = split_grads(&self.weight, &self.bias);
        let (weight, partial) = (slice(&self.weight), slice(&self.partial));
        let (aux, cols) = self.cols.io();
        // Scratch columns and `partial` are both in the fixed scratch, borrowed together.
        let (scratch, cols) = match &self.cols {
            Cols::Node(_) => (quote!(let partial = &mut io.fixed[#partial];), cols),
            Cols::Scratch(range) => {
                let range = slice(range);
                let scratch = quote! {
                    let [cols, partial] = io
                        .fixed
                        .get_disjoint_mut([#range, #partial])
                        .expect("a layer's fixed scratch ranges are disjoint");
                };
                (scratch, quote!(cols))
            }
        };
        quote! {
            {
                let io = ws.backward_io(#input, #output, #aux);
                #split
                #scratch
                ::kiln::__private::layers::conv2d_backward::<T>(
                    #shape, #grad_input, grad_weight, #grad_bias, partial, #cols, io.input,
                    &params[#weight], io.output, io.grad_output, #act, batch,
                );
            }
        }
    }
}
