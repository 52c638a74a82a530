//! Layer resolution, argument checks and shape inference, with diagnostics.
//!
//! [`check`] walks the parsed layer list once, resolving each layer against the
//! registry in [`LAYERS`], binding its arguments and computing its output shape. Every
//! mistake becomes a `syn::Error` spanned on the user's token; errors are collected,
//! not returned at the first, and a layer whose input shape is unknown (because an
//! earlier layer was wrong) is not shape-checked, so one mistake gives one message.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Lit, UnOp};

use crate::parse::{Args, Item, ModelDef};

/// The largest input rank the runtime has shape types for (`Shape1` .. `Shape4`).
pub const MAX_RANK: usize = 4;

/// A model whose every layer and shape is known to be valid.
pub struct Checked {
    pub input: Vec<usize>,
    pub output: Vec<usize>,
    pub layers: Vec<Layer>,
}

/// One resolved layer.
pub struct Layer {
    /// User-given or generated name (`fc1`, `dense_0`, `relu_1`).
    pub name: String,
    /// How the layer reads in a summary (`Dense(128)`).
    pub display: String,
    pub op: Op,
    pub input: Vec<usize>,
    pub output: Vec<usize>,
}

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

/// What a layer computes.
pub enum Op {
    Dense {
        units: usize,
        bias: bool,
    },
    Conv2d {
        out_channels: usize,
        window: Window,
        bias: bool,
    },
    Pool {
        max: bool,
        window: Window,
    },
    GlobalAvgPool,
    BatchNorm {
        eps: f64,
        momentum: f64,
    },
    Recurrent {
        cell: Cell,
        hidden: usize,
    },
    LastStep,
    Embedding {
        vocab: usize,
        dim: usize,
    },
    PositionalEmbedding,
    LayerNorm {
        eps: f64,
    },
    Attention {
        heads: usize,
        causal: bool,
    },
    Activation(Act),
    Softmax,
    LogSoftmax,
    Flatten,
    Dropout(f64),
    Residual(Vec<Layer>),
}

/// Recurrent cells.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cell {
    Rnn,
    Lstm,
    Gru,
}

/// Elementwise activations.
#[derive(Clone, Copy, PartialEq)]
pub enum Act {
    Relu,
    LeakyRelu(f64),
    Sigmoid,
    Tanh,
    Gelu,
}

impl Act {
    /// Whether the derivative is a function of the output, so the activation can be
    /// fused into a preceding dense layer (mirrors the runtime's `Activation::fusable`).
    pub fn fusable(self) -> bool {
        match self {
            Act::Relu | Act::Sigmoid | Act::Tanh => true,
            Act::LeakyRelu(slope) => slope >= 0.0,
            Act::Gelu => false,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ArgKind {
    Int,
    Float,
    Bool,
    /// An integer or a `(height, width)` pair of integers.
    Pair,
}

struct ArgSpec {
    name: &'static str,
    kind: ArgKind,
    required: bool,
}

/// A layer the DSL knows: its name, arguments, and the hint shown when a required
/// argument is missing.
struct LayerSpec {
    name: &'static str,
    args: &'static [ArgSpec],
    block: bool,
    usage: &'static str,
}

const fn arg(name: &'static str, kind: ArgKind, required: bool) -> ArgSpec {
    ArgSpec {
        name,
        kind,
        required,
    }
}

const fn layer(name: &'static str, args: &'static [ArgSpec], usage: &'static str) -> LayerSpec {
    LayerSpec {
        name,
        args,
        block: false,
        usage,
    }
}

/// Every layer of the DSL.
const LAYERS: &[LayerSpec] = &[
    layer(
        "Dense",
        &[
            arg("units", ArgKind::Int, true),
            arg("bias", ArgKind::Bool, false),
        ],
        "`Dense(128)` or `Dense(128, bias = false)`",
    ),
    layer("Relu", &[], "`Relu`"),
    layer(
        "LeakyRelu",
        &[arg("negative_slope", ArgKind::Float, false)],
        "`LeakyRelu` or `LeakyRelu(0.2)`",
    ),
    layer("Sigmoid", &[], "`Sigmoid`"),
    layer("Tanh", &[], "`Tanh`"),
    layer("Gelu", &[], "`Gelu`"),
    layer("Softmax", &[], "`Softmax`"),
    layer("LogSoftmax", &[], "`LogSoftmax`"),
    layer("Flatten", &[], "`Flatten`"),
    layer(
        "Dropout",
        &[arg("p", ArgKind::Float, true)],
        "`Dropout(0.5)`",
    ),
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
    ),
    layer(
        "MaxPool2d",
        &[
            arg("kernel", ArgKind::Pair, true),
            arg("stride", ArgKind::Pair, false),
            arg("padding", ArgKind::Pair, false),
            arg("floor", ArgKind::Bool, false),
        ],
        "`MaxPool2d(2)` or `MaxPool2d(3, stride = 2, padding = 1)`",
    ),
    layer(
        "AvgPool2d",
        &[
            arg("kernel", ArgKind::Pair, true),
            arg("stride", ArgKind::Pair, false),
            arg("padding", ArgKind::Pair, false),
            arg("floor", ArgKind::Bool, false),
        ],
        "`AvgPool2d(2)` or `AvgPool2d(3, stride = 2, padding = 1)`",
    ),
    layer("GlobalAvgPool", &[], "`GlobalAvgPool`"),
    layer("Rnn", &[arg("hidden", ArgKind::Int, true)], "`Rnn(64)`"),
    layer("Lstm", &[arg("hidden", ArgKind::Int, true)], "`Lstm(128)`"),
    layer("Gru", &[arg("hidden", ArgKind::Int, true)], "`Gru(64)`"),
    layer("LastStep", &[], "`LastStep`"),
    layer(
        "Embedding",
        &[
            arg("vocab", ArgKind::Int, true),
            arg("dim", ArgKind::Int, true),
        ],
        "`Embedding(vocab = 65, dim = 64)`",
    ),
    layer("PositionalEmbedding", &[], "`PositionalEmbedding`"),
    layer(
        "LayerNorm",
        &[arg("eps", ArgKind::Float, false)],
        "`LayerNorm` or `LayerNorm(eps = 1e-5)`",
    ),
    layer(
        "MultiHeadAttention",
        &[
            arg("heads", ArgKind::Int, true),
            arg("causal", ArgKind::Bool, false),
        ],
        "`MultiHeadAttention(heads = 4)` or `MultiHeadAttention(heads = 4, causal = true)`",
    ),
    layer(
        "BatchNorm2d",
        &[
            arg("num_features", ArgKind::Int, false),
            arg("eps", ArgKind::Float, false),
            arg("momentum", ArgKind::Float, false),
        ],
        "`BatchNorm2d` or `BatchNorm2d(16, eps = 1e-5, momentum = 0.1)`",
    ),
    layer(
        "BatchNorm1d",
        &[
            arg("num_features", ArgKind::Int, false),
            arg("eps", ArgKind::Float, false),
            arg("momentum", ArgKind::Float, false),
        ],
        "`BatchNorm1d` or `BatchNorm1d(128, eps = 1e-5, momentum = 0.1)`",
    ),
    LayerSpec {
        name: "Residual",
        args: &[],
        block: true,
        usage: "`Residual { Dense(64), Relu }`",
    },
];

/// Collects errors so that every independent mistake is reported in one compile.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let error = syn::Error::new(span, message);
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub fn finish<T>(self, value: T) -> syn::Result<T> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(value),
        }
    }
}

/// Resolves, binds and shape-checks the whole model.
pub fn check(def: &ModelDef) -> syn::Result<Checked> {
    let mut errors = Errors::default();
    let input = check_input(def, &mut errors);
    if def.items.is_empty() {
        errors.push(
            def.name.span(),
            "the model has no layers; add at least one after `input`",
        );
    }
    check_embedding_first(&def.items, true, &mut errors);
    let mut names = Names::default();
    names.collect_user_names(&def.items, &mut errors);
    let mut layers = Vec::new();
    let output = check_items(
        &def.items,
        input.clone(),
        &mut names,
        &mut layers,
        &mut errors,
    );
    if !def.items.is_empty() && def.items.iter().all(|i| i.kind == "Flatten") {
        errors.push(
            def.name.span(),
            "the model computes nothing: `Flatten` alone only renames the shape",
        );
    }
    let checked = match (input, output) {
        (Some(input), Some(output)) => Some(Checked {
            input,
            output,
            layers,
        }),
        _ => None,
    };
    errors
        .finish(checked)
        .map(|c| c.expect("no errors means every shape is known"))
}

/// Rule: an embedding reads the model's token ids, so it can only be the first layer.
fn check_embedding_first(items: &[Item], top: bool, errors: &mut Errors) {
    for (index, item) in items.iter().enumerate() {
        if item.kind == "Embedding" && !(top && index == 0) {
            errors.push(
                item.span(),
                "an `Embedding` reads token ids and must be the model's first layer",
            );
        }
        if let Some(block) = &item.block {
            check_embedding_first(&block.items, false, errors);
        }
    }
}

/// Rule: the input is 1 to 4 dimensions, none of them zero.
fn check_input(def: &ModelDef, errors: &mut Errors) -> Option<Vec<usize>> {
    let dims = &def.input.dims;
    let mut ok = true;
    if dims.is_empty() {
        errors.push(
            def.input.span,
            "the input needs at least one dimension, such as `input: [784]`",
        );
        ok = false;
    }
    if dims.len() > MAX_RANK {
        errors.push(
            def.input.span,
            format!(
                "an input of {} dimensions is not supported; at most {MAX_RANK}",
                dims.len()
            ),
        );
        ok = false;
    }
    for dim in dims.iter().filter(|d| d.value == 0) {
        errors.push(
            dim.span,
            "a dimension of 0 is not allowed; every dimension needs at least 1",
        );
        ok = false;
    }
    ok.then(|| dims.iter().map(|d| d.value).collect())
}

/// Layer names: the user's (unique) and generated ones that avoid them.
#[derive(Default)]
struct Names {
    taken: HashMap<String, Span>,
    counters: HashMap<&'static str, usize>,
}

impl Names {
    /// Rule: a layer name is used once in a model.
    fn collect_user_names(&mut self, items: &[Item], errors: &mut Errors) {
        for item in items {
            if let Some(name) = &item.name {
                let text = unraw(name);
                if let Some(&first) = self.taken.get(&text) {
                    errors.push(
                        name.span(),
                        format!("duplicate layer name `{text}`; each layer needs its own name"),
                    );
                    errors.push(first, format!("`{text}` is first used here"));
                } else {
                    self.taken.insert(text, name.span());
                }
            }
            if let Some(block) = &item.block {
                self.collect_user_names(&block.items, errors);
            }
        }
    }

    fn name_for(&mut self, item: &Item, kind: &'static str) -> String {
        if let Some(name) = &item.name {
            return unraw(name);
        }
        let stem = snake_case(kind);
        loop {
            let counter = self.counters.entry(kind).or_insert(0);
            let candidate = format!("{stem}_{counter}");
            *counter += 1;
            if !self.taken.contains_key(&candidate) {
                self.taken.insert(candidate.clone(), Span::call_site());
                return candidate;
            }
        }
    }
}

fn unraw(ident: &syn::Ident) -> String {
    ident.to_string().trim_start_matches("r#").to_string()
}

fn snake_case(kind: &str) -> String {
    let mut out = String::new();
    for (i, c) in kind.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Checks a layer list fed `shape` (None if unknown after an earlier error) and
/// returns the list's output shape.
fn check_items(
    items: &[Item],
    mut shape: Option<Vec<usize>>,
    names: &mut Names,
    out: &mut Vec<Layer>,
    errors: &mut Errors,
) -> Option<Vec<usize>> {
    for item in items {
        shape = check_item(item, shape, names, out, errors);
    }
    shape
}

fn check_item(
    item: &Item,
    shape: Option<Vec<usize>>,
    names: &mut Names,
    out: &mut Vec<Layer>,
    errors: &mut Errors,
) -> Option<Vec<usize>> {
    let kind_text = item.kind.to_string();
    let Some(spec) = LAYERS.iter().find(|l| l.name == kind_text) else {
        errors.push(item.kind.span(), unknown_layer_message(&kind_text));
        return None;
    };
    let values = bind_args(item, spec, errors)?;
    let name = names.name_for(item, spec.name);
    let where_ = item.span();
    let op = match spec.name {
        "Dense" => {
            let units = values[0].as_ref().map_or(0, Value::int);
            if units == 0 {
                errors.push(
                    values_span(item, 0),
                    format!("{name}: dense needs at least 1 unit"),
                );
                return None;
            }
            let bias = values[1].as_ref().is_none_or(Value::bool);
            Op::Dense { units, bias }
        }
        "Relu" => Op::Activation(Act::Relu),
        "LeakyRelu" => Op::Activation(Act::LeakyRelu(
            values[0].as_ref().map_or(0.01, Value::float),
        )),
        "Sigmoid" => Op::Activation(Act::Sigmoid),
        "Tanh" => Op::Activation(Act::Tanh),
        "Gelu" => Op::Activation(Act::Gelu),
        "Softmax" => Op::Softmax,
        "LogSoftmax" => Op::LogSoftmax,
        "Flatten" => Op::Flatten,
        "Dropout" => {
            let p = values[0].as_ref().map_or(0.0, Value::float);
            // Rule: a dropout probability is in [0, 1); p = 1 would zero every value.
            if !(0.0..1.0).contains(&p) {
                errors.push(
                    values_span(item, 0),
                    format!("{name}: dropout probability must be in [0, 1), got {p:?}"),
                );
                return None;
            }
            Op::Dropout(p)
        }
        "Conv2d" => {
            let out_channels = values[0].as_ref().map_or(0, Value::int);
            if out_channels == 0 {
                errors.push(
                    values_span(item, 0),
                    format!("{name}: conv2d needs at least 1 output channel"),
                );
                return None;
            }
            let window = window(
                item,
                &name,
                &values[1..5],
                values[6].as_ref().is_some_and(Value::bool),
                errors,
            )?;
            Op::Conv2d {
                out_channels,
                window,
                bias: values[5].as_ref().is_none_or(Value::bool),
            }
        }
        "MaxPool2d" | "AvgPool2d" => {
            let mut window_values = values[..3].to_vec();
            window_values.push(None); // pools have no dilation argument
            let window = window(
                item,
                &name,
                &window_values,
                values[3].as_ref().is_some_and(Value::bool),
                errors,
            )?;
            // Rule: pool padding is at most half the kernel (PyTorch's rule), so every
            // window holds at least one input.
            if window.padding.0 * 2 > window.kernel.0 || window.padding.1 * 2 > window.kernel.1 {
                errors.push(
                    where_,
                    format!(
                        "{name}: padding {} is more than half the kernel {}",
                        pair(window.padding),
                        pair(window.kernel)
                    ),
                );
                return None;
            }
            Op::Pool {
                max: spec.name == "MaxPool2d",
                window,
            }
        }
        "GlobalAvgPool" => Op::GlobalAvgPool,
        "Rnn" | "Lstm" | "Gru" => {
            let hidden = values[0].as_ref().map_or(0, Value::int);
            if hidden == 0 {
                errors.push(
                    values_span(item, 0),
                    format!("{name}: a recurrent layer needs at least 1 hidden unit"),
                );
                return None;
            }
            let cell = match spec.name {
                "Rnn" => Cell::Rnn,
                "Lstm" => Cell::Lstm,
                _ => Cell::Gru,
            };
            Op::Recurrent { cell, hidden }
        }
        "LastStep" => Op::LastStep,
        "Embedding" => {
            let (vocab, dim) = (
                values[0].as_ref().map_or(0, Value::int),
                values[1].as_ref().map_or(0, Value::int),
            );
            // Rule: an embedding has at least one token and one dimension.
            if vocab == 0 || dim == 0 {
                errors.push(
                    where_,
                    format!("{name}: an embedding needs vocab and dim of at least 1"),
                );
                return None;
            }
            Op::Embedding { vocab, dim }
        }
        "PositionalEmbedding" => Op::PositionalEmbedding,
        "LayerNorm" => {
            let eps = values[0].as_ref().map_or(1e-5, Value::float);
            if eps.is_nan() || eps <= 0.0 {
                errors.push(
                    values_span(item, 0),
                    format!("{name}: eps must be positive, got {eps:?}"),
                );
                return None;
            }
            Op::LayerNorm { eps }
        }
        "MultiHeadAttention" => {
            let heads = values[0].as_ref().map_or(0, Value::int);
            if heads == 0 {
                errors.push(
                    values_span(item, 0),
                    format!("{name}: attention needs at least 1 head"),
                );
                return None;
            }
            Op::Attention {
                heads,
                causal: values[1].as_ref().is_some_and(Value::bool),
            }
        }
        "BatchNorm2d" | "BatchNorm1d" => {
            let eps = values[1].as_ref().map_or(1e-5, Value::float);
            let momentum = values[2].as_ref().map_or(0.1, Value::float);
            // Rule: eps is positive and momentum a fraction.
            if eps.is_nan() || eps <= 0.0 {
                errors.push(
                    values_span(item, 1),
                    format!("{name}: eps must be positive, got {eps:?}"),
                );
                return None;
            }
            if !(0.0..=1.0).contains(&momentum) {
                errors.push(
                    values_span(item, 2),
                    format!("{name}: momentum must be in [0, 1], got {momentum:?}"),
                );
                return None;
            }
            Op::BatchNorm { eps, momentum }
        }
        "Residual" => return check_residual(item, name, shape, names, out, errors),
        other => unreachable!("layer {other} is in the registry but not handled"),
    };
    let input = shape?;
    let output = match &op {
        // Rule: dense maps the last axis and needs [features] or [steps, features].
        Op::Dense { units, .. } => {
            if input.len() > 2 {
                errors.push(
                    where_,
                    format!(
                        "{name}: dense expects [features] or [steps, features] but gets {}; insert `Flatten` before it",
                        dims(&input)
                    ),
                );
                return None;
            }
            let mut output = input.clone();
            *output.last_mut().expect("input rank is at least 1") = *units;
            output
        }
        Op::Flatten => vec![input.iter().product()],
        Op::Conv2d {
            out_channels,
            window,
            ..
        } => {
            let (h, w) = spatial(&name, "conv2d", &input, window, where_, errors)?;
            vec![*out_channels, h, w]
        }
        Op::Pool { max, window } => {
            let kind = if *max {
                "max pooling"
            } else {
                "average pooling"
            };
            let (h, w) = spatial(&name, kind, &input, window, where_, errors)?;
            // Rule: a max pool's argmax is stored as a float, exact up to 2^24.
            if *max && input.iter().product::<usize>() > 1 << 24 {
                errors.push(
                    where_,
                    format!("{name}: max pooling supports at most 16777216 values per sample"),
                );
                return None;
            }
            vec![input[0], h, w]
        }
        Op::Recurrent { hidden, .. } => {
            // Rule: a recurrent layer runs over [steps, features].
            if input.len() != 2 {
                errors.push(
                    where_,
                    format!(
                        "{name}: {} expects [steps, features] but gets {}",
                        spec.name,
                        dims(&input)
                    ),
                );
                return None;
            }
            vec![input[0], *hidden]
        }
        Op::Embedding { dim, .. } => {
            // Rule: an embedding reads [steps] of token ids.
            if input.len() != 1 {
                errors.push(
                    where_,
                    format!(
                        "{name}: Embedding expects [steps] of token ids but gets {}",
                        dims(&input)
                    ),
                );
                return None;
            }
            vec![input[0], *dim]
        }
        Op::PositionalEmbedding | Op::Attention { .. } => {
            // Rule: attention and positions work on [steps, dim]; heads divide dim.
            if input.len() != 2 {
                errors.push(
                    where_,
                    format!(
                        "{name}: {} expects [steps, dim] but gets {}",
                        spec.name,
                        dims(&input)
                    ),
                );
                return None;
            }
            if let Op::Attention { heads, .. } = &op {
                if input[1] % heads != 0 {
                    errors.push(
                        values_span(item, 0),
                        format!("{name}: dim {} is not divisible by {heads} heads", input[1]),
                    );
                    return None;
                }
            }
            input.clone()
        }
        Op::LastStep => {
            // Rule: LastStep keeps the last row of [steps, features].
            if input.len() != 2 {
                errors.push(
                    where_,
                    format!(
                        "{name}: LastStep expects [steps, features] but gets {}",
                        dims(&input)
                    ),
                );
                return None;
            }
            vec![input[1]]
        }
        Op::GlobalAvgPool => {
            // Rule: global pooling averages the spatial axes of [channels, height, width].
            if input.len() != 3 {
                errors.push(
                    where_,
                    format!("{name}: global average pooling expects [channels, height, width] but gets {}", dims(&input)),
                );
                return None;
            }
            vec![input[0]]
        }
        Op::BatchNorm { .. } => {
            // Rule: BatchNorm2d normalises [C, H, W]; BatchNorm1d [features] or [C, L];
            // an explicit feature count must match the channels.
            let two_d = spec.name == "BatchNorm2d";
            let expected = if two_d {
                "[channels, height, width]"
            } else {
                "[features] or [channels, length]"
            };
            if (two_d && input.len() != 3) || (!two_d && input.len() > 2) {
                errors.push(
                    where_,
                    format!(
                        "{name}: {} expects {expected} but gets {}",
                        spec.name,
                        dims(&input)
                    ),
                );
                return None;
            }
            if let Some(count) = values[0].as_ref().map(Value::int) {
                if count != input[0] {
                    errors.push(
                        values_span(item, 0),
                        format!("{name}: channel mismatch: declared {count} channels but the input {} has {}", dims(&input), input[0]),
                    );
                    return None;
                }
            }
            input.clone()
        }
        _ => input.clone(),
    };
    out.push(Layer {
        name,
        display: display(item),
        op,
        input,
        output: output.clone(),
    });
    Some(output)
}

/// Rule: a residual block is non-empty and preserves its input's shape.
fn check_residual(
    item: &Item,
    name: String,
    shape: Option<Vec<usize>>,
    names: &mut Names,
    out: &mut Vec<Layer>,
    errors: &mut Errors,
) -> Option<Vec<usize>> {
    let block = item.block.as_ref().expect("bind_args requires the block");
    let mut inner = Vec::new();
    let inner_out = check_items(&block.items, shape.clone(), names, &mut inner, errors);
    if block.items.iter().all(|i| i.kind == "Flatten") {
        errors.push(
            block.span,
            format!("{name}: a residual block needs at least one layer that computes something"),
        );
        return None;
    }
    let (input, output) = (shape?, inner_out?);
    if input != output {
        errors.push(
            item.span(),
            format!(
                "{name}: a residual block must preserve its shape, but it turns {} into {}",
                dims(&input),
                dims(&output)
            ),
        );
        if let Some((culprit, layer)) = block
            .items
            .iter()
            .zip(&inner)
            .find(|(_, l)| l.output != input)
        {
            errors.push(
                culprit.span(),
                format!(
                    "{}: this layer changes {} into {}",
                    layer.name,
                    dims(&layer.input),
                    dims(&layer.output)
                ),
            );
        }
        return None;
    }
    out.push(Layer {
        name,
        display: "Residual".to_string(),
        op: Op::Residual(inner),
        input: input.clone(),
        output,
    });
    Some(input)
}

/// Reads kernel, stride (defaulting to the kernel for pools, 1 for convolutions),
/// padding and dilation. Rule: kernel, stride and dilation are at least 1.
fn window(
    item: &Item,
    name: &str,
    values: &[Option<Value>],
    floor: bool,
    errors: &mut Errors,
) -> Option<Window> {
    let get = |i: usize| values[i].as_ref().map(Value::pair);
    let kernel = get(0).unwrap_or((0, 0));
    let is_conv = item.kind == "Conv2d";
    let stride = get(1).unwrap_or(if is_conv { (1, 1) } else { kernel });
    let padding = get(2).unwrap_or((0, 0));
    let dilation = get(3).unwrap_or((1, 1));
    let mut ok = true;
    for (what, value, index) in [
        ("kernel", kernel, 1),
        ("stride", stride, 2),
        ("dilation", dilation, 4),
    ] {
        if value.0 == 0 || value.1 == 0 {
            let arg_index = if is_conv { index } else { index - 1 };
            errors.push(
                values_span(item, arg_index),
                format!("{name}: {what} must be at least 1, got {}", pair(value)),
            );
            ok = false;
        }
    }
    ok.then_some(Window {
        kernel,
        stride,
        padding,
        dilation,
        floor,
    })
}

/// `3x3` for a square pair, `3x5` otherwise.
fn pair(p: (usize, usize)) -> String {
    format!("{}x{}", p.0, p.1)
}

/// Output height and width of a window over `[C, H, W]`. Rules: a 2-d layer needs a
/// `[channels, height, width]` input; the (dilated) kernel fits the padded input; the
/// stride tiles it exactly unless the layer sets `floor = true`.
fn spatial(
    name: &str,
    kind: &str,
    input: &[usize],
    w: &Window,
    at: Span,
    errors: &mut Errors,
) -> Option<(usize, usize)> {
    if input.len() != 3 {
        let hint = if input.len() == 1 {
            "; declare the input as [channels, height, width], such as `input: [1, 28, 28]`"
        } else {
            ""
        };
        errors.push(
            at,
            format!(
                "{name}: {kind} expects [channels, height, width] but gets {}{hint}",
                dims(input)
            ),
        );
        return None;
    }
    let span = |k: usize, d: usize| d * (k - 1) + 1;
    let extent = (
        span(w.kernel.0, w.dilation.0),
        span(w.kernel.1, w.dilation.1),
    );
    let padded = (input[1] + 2 * w.padding.0, input[2] + 2 * w.padding.1);
    if extent.0 > padded.0 || extent.1 > padded.1 {
        let dilated = if w.dilation != (1, 1) {
            format!(" (spanning {} with dilation)", pair(extent))
        } else {
            String::new()
        };
        let pad = if w.padding != (0, 0) {
            format!(" padded to {}", pair(padded))
        } else {
            String::new()
        };
        errors.push(
            at,
            format!(
                "{name}: kernel {}{dilated} does not fit input {}{pad}",
                pair(w.kernel),
                dims(input)
            ),
        );
        return None;
    }
    let rest = (
        (padded.0 - extent.0) % w.stride.0,
        (padded.1 - extent.1) % w.stride.1,
    );
    if rest != (0, 0) && !w.floor {
        errors.push(
            at,
            format!(
                "{name}: stride {} does not tile input {}: the last {} would be left over; add `floor = true` to drop it as PyTorch does",
                pair(w.stride),
                dims(input),
                match rest {
                    (1, _) => "row".to_string(),
                    (0, 1) => "column".to_string(),
                    (0, n) => format!("{n} columns"),
                    (n, _) => format!("{n} rows"),
                }
            ),
        );
        return None;
    }
    Some((
        (padded.0 - extent.0) / w.stride.0 + 1,
        (padded.1 - extent.1) / w.stride.1 + 1,
    ))
}

/// Formats a shape as `[6, 4, 4]`.
pub fn dims(d: &[usize]) -> String {
    let parts: Vec<String> = d.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// The layer as the user wrote it, normalised: `Dense(128, bias = false)`.
fn display(item: &Item) -> String {
    let mut text = item.kind.to_string();
    if let Some(args) = &item.args {
        let parts: Vec<String> = args
            .list
            .iter()
            .map(|a| {
                let value = quote::ToTokens::to_token_stream(&a.value)
                    .to_string()
                    .replace(' ', "");
                match &a.key {
                    Some(key) => format!("{key} = {value}"),
                    None => value,
                }
            })
            .collect();
        text.push_str(&format!("({})", parts.join(", ")));
    }
    text
}

fn values_span(item: &Item, index: usize) -> Span {
    item.args
        .as_ref()
        .and_then(|a| a.list.get(index))
        .map_or(item.kind.span(), |a| a.value.span())
}

/// A literal argument value.
#[derive(Clone, Copy)]
enum Value {
    Int(usize),
    Float(f64),
    Bool(bool),
    Pair(usize, usize),
}

impl Value {
    fn int(&self) -> usize {
        match *self {
            Value::Int(v) => v,
            _ => 0,
        }
    }
    fn float(&self) -> f64 {
        match *self {
            Value::Float(v) => v,
            Value::Int(v) => v as f64,
            Value::Bool(_) | Value::Pair(..) => f64::NAN,
        }
    }
    fn bool(&self) -> bool {
        matches!(self, Value::Bool(true))
    }
    fn pair(&self) -> (usize, usize) {
        match *self {
            Value::Pair(a, b) => (a, b),
            Value::Int(v) => (v, v),
            _ => (0, 0),
        }
    }
}

/// Binds a layer's arguments to its spec, positionally then by keyword. Returns the
/// values in spec order, or None after reporting what is wrong. Argument errors of one
/// layer are all reported.
fn bind_args(item: &Item, spec: &LayerSpec, errors: &mut Errors) -> Option<Vec<Option<Value>>> {
    let kind = spec.name;
    let mut ok = true;
    match (&item.block, spec.block) {
        (Some(block), false) => {
            errors.push(
                block.span,
                format!("`{kind}` does not take a `{{ .. }}` block"),
            );
            ok = false;
        }
        (None, true) => {
            errors.push(
                item.kind.span(),
                format!("`{kind}` needs its layers in braces: {}", spec.usage),
            );
            return None;
        }
        _ => {}
    }
    let mut values: Vec<Option<Value>> = vec![None; spec.args.len()];
    let empty = Args {
        span: item.kind.span(),
        list: Vec::new(),
    };
    let args = item.args.as_ref().unwrap_or(&empty);
    if spec.args.is_empty() && !args.list.is_empty() {
        errors.push(
            args.span,
            format!("`{kind}` takes no arguments; write {}", spec.usage),
        );
        return None;
    }
    let mut position = 0;
    for a in &args.list {
        let slot = match &a.key {
            None => {
                if position >= spec.args.len() {
                    errors.push(
                        a.value.span(),
                        format!(
                            "`{kind}` takes at most {} positional argument(s); write {}",
                            spec.args.len(),
                            spec.usage
                        ),
                    );
                    ok = false;
                    continue;
                }
                position += 1;
                position - 1
            }
            Some(key) => {
                let key_text = key.to_string();
                match spec.args.iter().position(|s| s.name == key_text) {
                    Some(slot) => slot,
                    None => {
                        let known: Vec<&str> = spec.args.iter().map(|s| s.name).collect();
                        let hint = closest(&key_text, &known)
                            .map_or_else(String::new, |c| format!("; did you mean `{c}`?"));
                        errors.push(
                            key.span(),
                            format!(
                                "`{kind}` has no argument `{key_text}` (it takes: {}){hint}",
                                known.join(", ")
                            ),
                        );
                        ok = false;
                        continue;
                    }
                }
            }
        };
        let arg_spec = &spec.args[slot];
        if values[slot].is_some() {
            errors.push(
                a.value.span(),
                format!("argument `{}` of `{kind}` is given twice", arg_spec.name),
            );
            ok = false;
            continue;
        }
        match literal(&a.value, arg_spec.kind) {
            Some(value) => values[slot] = Some(value),
            None => {
                let expected = match arg_spec.kind {
                    ArgKind::Int => "a positive integer literal",
                    ArgKind::Float => "a number literal",
                    ArgKind::Bool => "`true` or `false`",
                    ArgKind::Pair => "an integer or a pair of integers such as `(3, 5)`",
                };
                errors.push(
                    a.value.span(),
                    format!(
                        "argument `{}` of `{kind}` must be {expected}",
                        arg_spec.name
                    ),
                );
                ok = false;
            }
        }
    }
    for (slot, arg_spec) in spec.args.iter().enumerate() {
        if arg_spec.required && values[slot].is_none() && ok {
            errors.push(
                args.span,
                format!(
                    "`{kind}` needs its `{}` argument: {}",
                    arg_spec.name, spec.usage
                ),
            );
            ok = false;
        }
    }
    ok.then_some(values)
}

/// Reads a literal of the expected kind (a float may be written as an integer, and
/// negated).
fn literal(expr: &Expr, kind: ArgKind) -> Option<Value> {
    match expr {
        Expr::Lit(ExprLit { lit, .. }) => match (lit, kind) {
            (Lit::Int(i), ArgKind::Int | ArgKind::Pair) => {
                i.base10_parse::<usize>().ok().map(Value::Int)
            }
            (Lit::Int(i), ArgKind::Float) => i.base10_parse::<f64>().ok().map(Value::Float),
            (Lit::Float(f), ArgKind::Float) => f
                .base10_parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(Value::Float),
            (Lit::Bool(b), ArgKind::Bool) => Some(Value::Bool(b.value)),
            _ => None,
        },
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) if kind == ArgKind::Float => match literal(expr, kind)? {
            Value::Float(v) => Some(Value::Float(-v)),
            _ => None,
        },
        Expr::Group(group) => literal(&group.expr, kind),
        Expr::Paren(paren) => literal(&paren.expr, kind),
        Expr::Tuple(tuple) if kind == ArgKind::Pair && tuple.elems.len() == 2 => {
            let mut it = tuple.elems.iter().map(|e| literal(e, ArgKind::Int));
            match (it.next()??, it.next()??) {
                (Value::Int(a), Value::Int(b)) => Some(Value::Pair(a, b)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// PyTorch and Keras names that users reach for, mapped to ours.
const ALIASES: &[(&str, &str)] = &[
    ("Linear", "Dense"),
    ("ReLU", "Relu"),
    ("LeakyReLU", "LeakyRelu"),
    ("GELU", "Gelu"),
    ("Conv2D", "Conv2d"),
    ("MaxPooling2D", "MaxPool2d"),
    ("AveragePooling2D", "AvgPool2d"),
    ("GlobalAveragePooling2D", "GlobalAvgPool"),
    ("AdaptiveAvgPool2d", "GlobalAvgPool"),
    ("BatchNormalization", "BatchNorm2d"),
    ("LSTM", "Lstm"),
    ("GRU", "Gru"),
    ("RNN", "Rnn"),
    ("SimpleRNN", "Rnn"),
    ("MultiheadAttention", "MultiHeadAttention"),
    ("Attention", "MultiHeadAttention"),
    ("Residual", "Residual"),
];

fn unknown_layer_message(kind: &str) -> String {
    let names: Vec<&str> = LAYERS.iter().map(|l| l.name).collect();
    let suggestion = ALIASES
        .iter()
        .find(|(alias, _)| *alias == kind)
        .map(|(_, ours)| *ours)
        .or_else(|| closest(kind, &names));
    match suggestion {
        Some(s) => format!("unknown layer `{kind}`; did you mean `{s}`?"),
        None => format!("unknown layer `{kind}`; known layers: {}", names.join(", ")),
    }
}

/// The candidate nearest to `word` by edit distance (ignoring case), if near enough.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&word, &c.to_lowercase()), *c))
        .filter(|(d, c)| *d <= c.len().div_ceil(3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("dense", "dens"), 1);
        assert_eq!(closest("Dens", &["Dense", "Relu"]), Some("Dense"));
        assert_eq!(closest("relu", &["Dense", "Relu"]), Some("Relu"));
        assert_eq!(closest("Transformer", &["Dense", "Relu"]), None);
        assert!(unknown_layer_message("Linear").contains("`Dense`"));
    }

    #[test]
    fn generated_names_are_snake_case() {
        assert_eq!(snake_case("LeakyRelu"), "leaky_relu");
        assert_eq!(snake_case("Dense"), "dense");
    }
}
