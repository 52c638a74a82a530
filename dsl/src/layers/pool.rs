//! `MaxPool2d(kernel, stride, padding, floor)` and `AvgPool2d(..)` over
//! `[channels, height, width]` (stride defaults to the kernel, as in PyTorch), and
//! `GlobalAvgPool`, `[C, H, W]` to `[C]`.

use proc_macro2::TokenStream;
use quote::quote;

use super::activation::Act;
use super::conv::{geometry, pair, shape_tokens, spatial, window, window_attrs, Geometry, Window};
use super::onnx::{attr_int, node, reshape_input, temp, value_node, StepShapes};
use super::{arg, layer, size, ArgKind, Call, Checked, GradFlow, LayerSpec, Op, Step};
use crate::check::{dims, Checker, Layer};
use crate::codegen::Plan;

const WINDOW_ARGS: &[super::ArgSpec] = &[
    arg("kernel", ArgKind::Pair, true),
    arg("stride", ArgKind::Pair, false),
    arg("padding", ArgKind::Pair, false),
    arg("floor", ArgKind::Bool, false),
];

pub const SPECS: &[LayerSpec] = &[
    layer(
        "MaxPool2d",
        WINDOW_ARGS,
        "`MaxPool2d(2)` or `MaxPool2d(3, stride = 2, padding = 1)`",
        check_pool,
    ),
    layer(
        "AvgPool2d",
        WINDOW_ARGS,
        "`AvgPool2d(2)` or `AvgPool2d(3, stride = 2, padding = 1)`",
        check_pool,
    ),
    layer("GlobalAvgPool", &[], "`GlobalAvgPool`", check_global),
];

struct Pool {
    max: bool,
    window: Window,
}

fn check_pool(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let name = &call.name;
    let window = window(checker, call, 0, false, call.flag(3, false))?;
    // Rule: pool padding is at most half the kernel (PyTorch's rule), so every window
    // holds at least one input.
    if window.padding.0 * 2 > window.kernel.0 || window.padding.1 * 2 > window.kernel.1 {
        checker.push(
            call.span(),
            format!(
                "{name}: padding {} is more than half the kernel {}",
                pair(window.padding),
                pair(window.kernel)
            ),
        );
        return None;
    }
    let max = call.spec.name == "MaxPool2d";
    let input = call.input.as_ref()?;
    let kind = if max {
        "max pooling"
    } else {
        "average pooling"
    };
    let (h, w) = spatial(checker, name, kind, input, &window, call.span())?;
    // Rule: a max pool's argmax is stored as a float, exact up to 2^24.
    if max && size(input) > 1 << 24 {
        checker.push(
            call.span(),
            format!("{name}: max pooling supports at most 16777216 values per sample"),
        );
        return None;
    }
    Some((Box::new(Pool { max, window }), vec![input[0], h, w]))
}

impl Op for Pool {
    fn flops(&self, layer: &Layer) -> u64 {
        (size(&layer.output) * self.window.kernel.0 * self.window.kernel.1) as u64
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let geometry = geometry(layer, &self.window);
        let output = plan.node(size(&layer.output));
        let argmax = self.max.then(|| plan.node(size(&layer.output)));
        plan.push(PoolStep {
            input,
            output,
            argmax,
            geometry,
        });
        output
    }
}

struct PoolStep {
    input: usize,
    output: usize,
    /// The argmax node of a max pool; `None` for an average pool.
    argmax: Option<usize>,
    geometry: Geometry,
}

impl Step for PoolStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn onnx(&self, shapes: &StepShapes) -> Option<Vec<TokenStream>> {
        let out = self.output;
        // kiln's pools take no dilation: ONNX's `MaxPool` has one, `AveragePool` had
        // none before opset 19.
        let attrs: Vec<TokenStream> = window_attrs(&self.geometry, false)
            .into_iter()
            .take(3)
            .collect();
        let (op, attrs) = match self.argmax {
            Some(_) => ("MaxPool", attrs),
            None => {
                let mut attrs = attrs;
                attrs.push(attr_int("count_include_pad", 1));
                ("AveragePool", attrs)
            }
        };
        Some(vec![
            reshape_input(self.input, out, shapes.input),
            node(op, &[temp(out, 0)], value_node(out), &attrs),
        ])
    }

    fn forward(&self) -> TokenStream {
        let PoolStep { input, output, .. } = self;
        let shape = shape_tokens(&self.geometry);
        let layers = quote!(::kiln::__private::layers);
        match self.argmax {
            Some(argmax) => quote! {
                {
                    let io = ws.forward_io(#input, #output, ::core::option::Option::Some(#argmax));
                    #layers::max_pool2d_forward::<T>(#shape, io.output, io.aux, io.input, batch);
                }
            },
            None => quote! {
                {
                    let io = ws.forward_io(#input, #output, ::core::option::Option::None);
                    #layers::avg_pool2d_forward::<T>(#shape, io.output, io.input, batch);
                }
            },
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let PoolStep { input, output, .. } = self;
        let shape = shape_tokens(&self.geometry);
        let layers = quote!(::kiln::__private::layers);
        let accum = flow.accum_or_replace(*input);
        match self.argmax {
            Some(argmax) => quote! {
                {
                    let io = ws.backward_io(#input, #output, ::core::option::Option::Some(#argmax));
                    #layers::max_pool2d_backward::<T>(#shape, io.grad_input, #accum, io.aux, io.grad_output, batch);
                }
            },
            None => quote! {
                {
                    let io = ws.backward_io(#input, #output, ::core::option::Option::None);
                    #layers::avg_pool2d_backward::<T>(#shape, io.grad_input, #accum, io.grad_output, batch);
                }
            },
        }
    }
}

struct GlobalAvgPool;

fn check_global(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let input = call.input.as_ref()?;
    // Rule: global pooling averages the spatial axes of [channels, height, width].
    if input.len() != 3 {
        let hint = checker.vector_hint(input).unwrap_or_default();
        checker.push(
            call.span(),
            format!(
                "{}: global average pooling expects [channels, height, width] but gets {}{hint}",
                call.name,
                dims(input)
            ),
        );
        return None;
    }
    Some((Box::new(GlobalAvgPool), vec![input[0]]))
}

impl Op for GlobalAvgPool {
    fn flops(&self, layer: &Layer) -> u64 {
        size(&layer.input) as u64
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let output = plan.node(size(&layer.output));
        let channels = layer.input[0];
        plan.push(GlobalAvgPoolStep {
            input,
            output,
            channels,
            inner: size(&layer.input) / channels,
        });
        output
    }
}

struct GlobalAvgPoolStep {
    input: usize,
    output: usize,
    channels: usize,
    inner: usize,
}

impl Step for GlobalAvgPoolStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn onnx(&self, shapes: &StepShapes) -> Option<Vec<TokenStream>> {
        let out = self.output;
        Some(vec![
            reshape_input(self.input, out, shapes.input),
            node("GlobalAveragePool", &[temp(out, 0)], temp(out, 1), &[]),
            node(
                "Flatten",
                &[temp(out, 1)],
                value_node(out),
                &[attr_int("axis", 1)],
            ),
        ])
    }

    fn forward(&self) -> TokenStream {
        let GlobalAvgPoolStep {
            input,
            output,
            channels,
            inner,
        } = self;
        quote! {
            {
                let io = ws.forward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::global_avg_pool_forward::<T, #channels>(io.output, io.input, #inner, batch);
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let GlobalAvgPoolStep {
            input,
            output,
            channels,
            inner,
        } = self;
        let accum = flow.accum_or_replace(*input);
        quote! {
            {
                let io = ws.backward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::global_avg_pool_backward::<T, #channels>(io.grad_input, #accum, io.grad_output, #inner, batch);
            }
        }
    }
}
