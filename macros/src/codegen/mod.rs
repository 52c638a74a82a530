//! Checked model to Rust: the plan of buffers and steps, then one generated item per
//! file.
//!
//! The plan numbers the workspace nodes (node 0 is the input; every layer that
//! computes writes a new node; `Flatten` only renames the shape), lays out the
//! parameters in PyTorch's order and fuses each dense layer with a following
//! activation whose derivative can be read off its output. The emitted code is
//! straight-line calls into `::kiln::__private::layers` with const dimensions.

mod model_impl;
mod model_struct;
mod passes;

use std::ops::Range;

use proc_macro2::{Group, Literal, TokenStream, TokenTree};
use quote::quote;

use crate::check::{Act, Cell, Checked, Layer, Op, Window};
use crate::parse::ModelDef;

/// Emits the model for a definition that passed every check.
pub fn emit(def: &ModelDef, checked: &Checked) -> TokenStream {
    let plan = Plan::new(checked);
    let (structure, inherent) = model_struct::emit(def, checked, &plan);
    let model = model_impl::emit(def, checked, &plan);
    unsuffixed(quote! {
        #structure
        const _: () = {
            #inherent
            #model
        };
    })
}

/// Drops the `usize`/`u64` suffixes `quote` gives integers, so the expansion reads
/// like hand-written code (`dense_forward::<T, 784, 128>`); the types are inferred.
fn unsuffixed(tokens: TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .map(|tree| match tree {
            TokenTree::Group(group) => {
                let mut new = Group::new(group.delimiter(), unsuffixed(group.stream()));
                new.set_span(group.span());
                TokenTree::Group(new)
            }
            TokenTree::Literal(literal) => {
                let text = literal.to_string();
                match text
                    .strip_suffix("usize")
                    .or_else(|| text.strip_suffix("u64"))
                {
                    Some(digits)
                        if digits.bytes().all(|b| b.is_ascii_digit()) && !digits.is_empty() =>
                    {
                        let mut new = Literal::u64_unsuffixed(digits.parse().unwrap_or_default());
                        new.set_span(literal.span());
                        TokenTree::Literal(new)
                    }
                    _ => TokenTree::Literal(literal),
                }
            }
            other => other,
        })
        .collect()
}

/// The struct alone, so that a model with errors still names a type and the user sees
/// the real error instead of a cascade of "cannot find type".
pub fn emit_fallback(def: &ModelDef) -> TokenStream {
    let ModelDef {
        attrs, vis, name, ..
    } = def;
    quote! {
        #(#attrs)*
        #vis struct #name<T = ::core::primitive::f32>(::core::marker::PhantomData<T>);
    }
}

/// How a parameter or buffer starts.
#[derive(Clone, Copy)]
pub enum InitPlan {
    /// `U(-1/√fan_in, 1/√fan_in)`.
    FanIn(usize),
    Zeros,
    Ones,
    /// Xavier/Glorot uniform with `(fan_in, fan_out)`.
    Xavier(usize, usize),
    /// `N(0, std²)`.
    Normal(f64),
}

/// One parameter or buffer tensor.
pub struct ParamPlan {
    pub name: String,
    pub shape: Vec<usize>,
    pub range: Range<usize>,
    pub init: InitPlan,
    pub regularized: bool,
    /// Saved as one I64 count (batch norm's `num_batches_tracked`).
    pub count: bool,
}

/// The runtime's `Conv2dShape`, computed here.
#[derive(Clone, Copy)]
pub struct Geometry {
    pub in_channels: usize,
    pub in_size: (usize, usize),
    pub out_channels: usize,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub out_size: (usize, usize),
}

impl Geometry {
    fn new(layer: &Layer, window: &Window) -> Self {
        Geometry {
            in_channels: layer.input[0],
            in_size: (layer.input[1], layer.input[2]),
            out_channels: layer.output[0],
            kernel: window.kernel,
            stride: window.stride,
            padding: window.padding,
            dilation: window.dilation,
            out_size: (layer.output[1], layer.output[2]),
        }
    }

    /// Rows of the column matrix.
    pub fn k(&self) -> usize {
        self.in_channels * self.kernel.0 * self.kernel.1
    }
}

/// One kernel call of the forward pass, with its backward counterpart.
pub enum Step {
    Dense {
        input: usize,
        output: usize,
        in_features: usize,
        out_features: usize,
        rows_per_sample: usize,
        weight: Range<usize>,
        bias: Option<Range<usize>>,
        fused: Option<Act>,
    },
    Conv {
        input: usize,
        output: usize,
        cols: usize,
        geometry: Geometry,
        weight: Range<usize>,
        bias: Option<Range<usize>>,
        fused: Option<Act>,
        partial: Range<usize>,
    },
    Pool {
        max: bool,
        input: usize,
        output: usize,
        argmax: Option<usize>,
        geometry: Geometry,
    },
    GlobalAvgPool {
        input: usize,
        output: usize,
        channels: usize,
        inner: usize,
    },
    BatchNorm {
        input: usize,
        output: usize,
        channels: usize,
        inner: usize,
        eps: f64,
        momentum: f64,
        gamma: Range<usize>,
        beta: Range<usize>,
        running: Range<usize>,
        saved: Range<usize>,
    },
    Recurrent {
        input: usize,
        output: usize,
        aux: usize,
        scratch: Range<usize>,
        cell: Cell,
        steps: usize,
        features: usize,
        hidden: usize,
        weight_ih: Range<usize>,
        weight_hh: Range<usize>,
        bias_ih: Range<usize>,
        bias_hh: Range<usize>,
    },
    Embedding {
        input: usize,
        output: usize,
        dim: usize,
        table: Range<usize>,
    },
    Positional {
        input: usize,
        output: usize,
        table: Range<usize>,
    },
    LayerNorm {
        input: usize,
        output: usize,
        saved: usize,
        width: usize,
        eps: f64,
        gamma: Range<usize>,
        beta: Range<usize>,
    },
    Attention {
        input: usize,
        output: usize,
        aux: usize,
        steps: usize,
        dim: usize,
        heads: usize,
        causal: bool,
        in_weight: Range<usize>,
        in_bias: Range<usize>,
        out_weight: Range<usize>,
        out_bias: Range<usize>,
    },
    TakeLast {
        input: usize,
        output: usize,
        steps: usize,
        width: usize,
    },
    Activation {
        act: Act,
        input: usize,
        output: usize,
    },
    Softmax {
        log: bool,
        width: usize,
        input: usize,
        output: usize,
    },
    Dropout {
        p: f64,
        input: usize,
        output: usize,
        mask: usize,
    },
    Residual {
        input: usize,
        inner: usize,
        output: usize,
    },
}

impl Step {
    /// Nodes whose gradient this step's backward writes.
    pub fn inputs(&self) -> Vec<usize> {
        match *self {
            Step::Dense { input, .. }
            | Step::Conv { input, .. }
            | Step::Pool { input, .. }
            | Step::GlobalAvgPool { input, .. }
            | Step::BatchNorm { input, .. }
            | Step::Recurrent { input, .. }
            | Step::TakeLast { input, .. }
            | Step::Embedding { input, .. }
            | Step::Positional { input, .. }
            | Step::LayerNorm { input, .. }
            | Step::Attention { input, .. }
            | Step::Activation { input, .. }
            | Step::Softmax { input, .. }
            | Step::Dropout { input, .. } => vec![input],
            Step::Residual { input, inner, .. } => vec![input, inner],
        }
    }

    pub fn output(&self) -> usize {
        match *self {
            Step::Dense { output, .. }
            | Step::Conv { output, .. }
            | Step::Pool { output, .. }
            | Step::GlobalAvgPool { output, .. }
            | Step::BatchNorm { output, .. }
            | Step::Recurrent { output, .. }
            | Step::TakeLast { output, .. }
            | Step::Embedding { output, .. }
            | Step::Positional { output, .. }
            | Step::LayerNorm { output, .. }
            | Step::Attention { output, .. }
            | Step::Activation { output, .. }
            | Step::Softmax { output, .. }
            | Step::Dropout { output, .. }
            | Step::Residual { output, .. } => output,
        }
    }

    pub fn has_params(&self) -> bool {
        matches!(
            self,
            Step::Dense { .. }
                | Step::Conv { .. }
                | Step::BatchNorm { .. }
                | Step::Recurrent { .. }
                | Step::Embedding { .. }
                | Step::Positional { .. }
                | Step::LayerNorm { .. }
                | Step::Attention { .. }
        )
    }

    /// The step's trainable parameters, as ranges of the parameter buffer.
    pub fn param_ranges(&self) -> Vec<Range<usize>> {
        match self {
            Step::Dense { weight, bias, .. } | Step::Conv { weight, bias, .. } => {
                std::iter::once(weight.clone())
                    .chain(bias.clone())
                    .collect()
            }
            Step::BatchNorm { gamma, beta, .. } | Step::LayerNorm { gamma, beta, .. } => {
                vec![gamma.clone(), beta.clone()]
            }
            Step::Recurrent {
                weight_ih,
                weight_hh,
                bias_ih,
                bias_hh,
                ..
            } => vec![
                weight_ih.clone(),
                weight_hh.clone(),
                bias_ih.clone(),
                bias_hh.clone(),
            ],
            Step::Embedding { table, .. } | Step::Positional { table, .. } => vec![table.clone()],
            Step::Attention {
                in_weight,
                in_bias,
                out_weight,
                out_bias,
                ..
            } => vec![
                in_weight.clone(),
                in_bias.clone(),
                out_weight.clone(),
                out_bias.clone(),
            ],
            Step::Pool { .. }
            | Step::GlobalAvgPool { .. }
            | Step::TakeLast { .. }
            | Step::Activation { .. }
            | Step::Softmax { .. }
            | Step::Dropout { .. }
            | Step::Residual { .. } => Vec::new(),
        }
    }

    /// Whether the step's kernel needs the batch size.
    pub fn uses_batch(&self) -> bool {
        !matches!(
            self,
            Step::Activation { .. }
                | Step::Softmax { .. }
                | Step::Dropout { .. }
                | Step::Residual { .. }
        )
    }
}

/// Buffers and steps of a model.
pub struct Plan {
    /// Per-sample size of each node.
    pub node_sizes: Vec<usize>,
    pub params: Vec<ParamPlan>,
    pub buffers: Vec<ParamPlan>,
    /// Batch-independent scratch, in values.
    pub fixed: usize,
    pub steps: Vec<Step>,
    pub output_node: usize,
}

fn push_tensor(
    table: &mut Vec<ParamPlan>,
    name: String,
    shape: Vec<usize>,
    init: InitPlan,
    regularized: bool,
    count: bool,
) -> Range<usize> {
    let start = table.last().map_or(0, |p| p.range.end);
    let len = if count {
        1
    } else {
        shape.iter().product::<usize>()
    };
    let range = start..start + len;
    table.push(ParamPlan {
        name,
        shape,
        range: range.clone(),
        init,
        regularized,
        count,
    });
    range
}

impl Plan {
    fn new(checked: &Checked) -> Self {
        let mut plan = Plan {
            node_sizes: vec![checked.input.iter().product()],
            params: Vec::new(),
            buffers: Vec::new(),
            fixed: 0,
            steps: Vec::new(),
            output_node: 0,
        };
        plan.output_node = plan.layers(&checked.layers, 0);
        plan
    }

    fn node(&mut self, size: usize) -> usize {
        self.node_sizes.push(size);
        self.node_sizes.len() - 1
    }

    fn param(
        &mut self,
        name: String,
        shape: Vec<usize>,
        init: InitPlan,
        regularized: bool,
    ) -> Range<usize> {
        push_tensor(&mut self.params, name, shape, init, regularized, false)
    }

    fn fixed(&mut self, len: usize) -> Range<usize> {
        self.fixed += len;
        self.fixed - len..self.fixed
    }

    /// Plans a layer list fed from node `current`; returns the node of its output.
    fn layers(&mut self, layers: &[Layer], mut current: usize) -> usize {
        let mut i = 0;
        while i < layers.len() {
            let layer = &layers[i];
            let size: usize = layer.output.iter().product();
            let name = layer.name.clone();
            let next_fusable = match layers.get(i + 1).map(|l| &l.op) {
                Some(Op::Activation(act)) if act.fusable() => Some(*act),
                _ => None,
            };
            let mut fused_next = false;
            match &layer.op {
                Op::Dense { units, bias } => {
                    let in_features = *layer.input.last().expect("rank >= 1");
                    let rows_per_sample = layer.input.iter().product::<usize>() / in_features;
                    let fan_in = InitPlan::FanIn(in_features);
                    let weight = self.param(
                        format!("{name}.weight"),
                        vec![*units, in_features],
                        fan_in,
                        true,
                    );
                    let bias = bias
                        .then(|| self.param(format!("{name}.bias"), vec![*units], fan_in, false));
                    let output = self.node(size);
                    self.steps.push(Step::Dense {
                        input: current,
                        output,
                        in_features,
                        out_features: *units,
                        rows_per_sample,
                        weight,
                        bias,
                        fused: next_fusable,
                    });
                    current = output;
                    fused_next = next_fusable.is_some();
                }
                Op::Conv2d {
                    out_channels,
                    window,
                    bias,
                } => {
                    let geometry = Geometry::new(layer, window);
                    let k = geometry.k();
                    let fan_in = InitPlan::FanIn(k);
                    let shape = vec![
                        *out_channels,
                        geometry.in_channels,
                        window.kernel.0,
                        window.kernel.1,
                    ];
                    let weight = self.param(format!("{name}.weight"), shape, fan_in, true);
                    let bias = bias.then(|| {
                        self.param(format!("{name}.bias"), vec![*out_channels], fan_in, false)
                    });
                    let output = self.node(size);
                    let cols = self.node(k * geometry.out_size.0 * geometry.out_size.1);
                    // `Conv2dShape::partial_len`: three weights' worth of scratch and
                    // room to align one.
                    let partial = self.fixed(3 * out_channels * k + 16);
                    self.steps.push(Step::Conv {
                        input: current,
                        output,
                        cols,
                        geometry,
                        weight,
                        bias,
                        fused: next_fusable,
                        partial,
                    });
                    current = output;
                    fused_next = next_fusable.is_some();
                }
                Op::Pool { max, window } => {
                    let geometry = Geometry::new(layer, window);
                    let output = self.node(size);
                    let argmax = max.then(|| self.node(size));
                    self.steps.push(Step::Pool {
                        max: *max,
                        input: current,
                        output,
                        argmax,
                        geometry,
                    });
                    current = output;
                }
                Op::GlobalAvgPool => {
                    let output = self.node(size);
                    let channels = layer.input[0];
                    let inner = layer.input.iter().product::<usize>() / channels;
                    self.steps.push(Step::GlobalAvgPool {
                        input: current,
                        output,
                        channels,
                        inner,
                    });
                    current = output;
                }
                Op::BatchNorm { eps, momentum } => {
                    let channels = layer.input[0];
                    let inner = layer.input.iter().product::<usize>() / channels;
                    let gamma = self.param(
                        format!("{name}.weight"),
                        vec![channels],
                        InitPlan::Ones,
                        false,
                    );
                    let beta = self.param(
                        format!("{name}.bias"),
                        vec![channels],
                        InitPlan::Zeros,
                        false,
                    );
                    let mean = push_tensor(
                        &mut self.buffers,
                        format!("{name}.running_mean"),
                        vec![channels],
                        InitPlan::Zeros,
                        false,
                        false,
                    );
                    push_tensor(
                        &mut self.buffers,
                        format!("{name}.running_var"),
                        vec![channels],
                        InitPlan::Ones,
                        false,
                        false,
                    );
                    let tracked = push_tensor(
                        &mut self.buffers,
                        format!("{name}.num_batches_tracked"),
                        vec![],
                        InitPlan::Zeros,
                        false,
                        true,
                    );
                    let saved = self.fixed(2 * channels);
                    let output = self.node(size);
                    self.steps.push(Step::BatchNorm {
                        input: current,
                        output,
                        channels,
                        inner,
                        eps: *eps,
                        momentum: *momentum,
                        gamma,
                        beta,
                        running: mean.start..tracked.end,
                        saved,
                    });
                    current = output;
                }
                Op::Recurrent { cell, hidden } => {
                    let (steps, features) = (layer.input[0], layer.input[1]);
                    let width = gates(*cell) * hidden;
                    let fan_in = InitPlan::FanIn(*hidden);
                    let weight_ih = self.param(
                        format!("{name}.weight_ih_l0"),
                        vec![width, features],
                        fan_in,
                        true,
                    );
                    let weight_hh = self.param(
                        format!("{name}.weight_hh_l0"),
                        vec![width, *hidden],
                        fan_in,
                        true,
                    );
                    let bias_ih =
                        self.param(format!("{name}.bias_ih_l0"), vec![width], fan_in, false);
                    let bias_hh =
                        self.param(format!("{name}.bias_hh_l0"), vec![width], fan_in, false);
                    let output = self.node(size);
                    let aux = self.node(recurrent_aux_len(*cell, steps, *hidden));
                    // `RecurrentShape::scratch_len`: both weights, transposed.
                    let scratch = self.fixed(width * (features + hidden));
                    self.steps.push(Step::Recurrent {
                        input: current,
                        output,
                        aux,
                        scratch,
                        cell: *cell,
                        steps,
                        features,
                        hidden: *hidden,
                        weight_ih,
                        weight_hh,
                        bias_ih,
                        bias_hh,
                    });
                    current = output;
                }
                Op::Embedding { vocab, dim } => {
                    let table = self.param(
                        format!("{name}.weight"),
                        vec![*vocab, *dim],
                        InitPlan::Normal(1.0),
                        false,
                    );
                    let output = self.node(size);
                    self.steps.push(Step::Embedding {
                        input: current,
                        output,
                        dim: *dim,
                        table,
                    });
                    current = output;
                }
                Op::PositionalEmbedding => {
                    let table = self.param(
                        format!("{name}.weight"),
                        layer.input.clone(),
                        InitPlan::Normal(0.02),
                        false,
                    );
                    let output = self.node(size);
                    self.steps.push(Step::Positional {
                        input: current,
                        output,
                        table,
                    });
                    current = output;
                }
                Op::LayerNorm { eps } => {
                    let width = *layer.input.last().expect("rank >= 1");
                    let gamma =
                        self.param(format!("{name}.weight"), vec![width], InitPlan::Ones, false);
                    let beta =
                        self.param(format!("{name}.bias"), vec![width], InitPlan::Zeros, false);
                    let output = self.node(size);
                    let saved = self.node(2 * size / width);
                    self.steps.push(Step::LayerNorm {
                        input: current,
                        output,
                        saved,
                        width,
                        eps: *eps,
                        gamma,
                        beta,
                    });
                    current = output;
                }
                Op::Attention { heads, causal } => {
                    let (steps, dim) = (layer.input[0], layer.input[1]);
                    let in_weight = self.param(
                        format!("{name}.in_proj_weight"),
                        vec![3 * dim, dim],
                        InitPlan::Xavier(dim, 3 * dim),
                        true,
                    );
                    let in_bias = self.param(
                        format!("{name}.in_proj_bias"),
                        vec![3 * dim],
                        InitPlan::Zeros,
                        false,
                    );
                    let out_weight = self.param(
                        format!("{name}.out_proj.weight"),
                        vec![dim, dim],
                        InitPlan::FanIn(dim),
                        true,
                    );
                    let out_bias = self.param(
                        format!("{name}.out_proj.bias"),
                        vec![dim],
                        InitPlan::Zeros,
                        false,
                    );
                    let output = self.node(size);
                    let aux_len = 3 * steps * dim
                        + heads * steps * steps
                        + steps * dim
                        + 3 * steps * dim
                        + steps * steps;
                    let aux = self.node(aux_len);
                    self.steps.push(Step::Attention {
                        input: current,
                        output,
                        aux,
                        steps,
                        dim,
                        heads: *heads,
                        causal: *causal,
                        in_weight,
                        in_bias,
                        out_weight,
                        out_bias,
                    });
                    current = output;
                }
                Op::LastStep => {
                    let output = self.node(size);
                    self.steps.push(Step::TakeLast {
                        input: current,
                        output,
                        steps: layer.input[0],
                        width: layer.input[1],
                    });
                    current = output;
                }
                Op::Activation(act) => {
                    let output = self.node(size);
                    self.steps.push(Step::Activation {
                        act: *act,
                        input: current,
                        output,
                    });
                    current = output;
                }
                Op::Softmax | Op::LogSoftmax => {
                    let output = self.node(size);
                    self.steps.push(Step::Softmax {
                        log: matches!(layer.op, Op::LogSoftmax),
                        width: *layer.output.last().expect("rank >= 1"),
                        input: current,
                        output,
                    });
                    current = output;
                }
                Op::Flatten => {}
                Op::Dropout(p) => {
                    let output = self.node(size);
                    let mask = self.node(size);
                    self.steps.push(Step::Dropout {
                        p: *p,
                        input: current,
                        output,
                        mask,
                    });
                    current = output;
                }
                Op::Residual(inner) => {
                    let inner_out = self.layers(inner, current);
                    let output = self.node(size);
                    self.steps.push(Step::Residual {
                        input: current,
                        inner: inner_out,
                        output,
                    });
                    current = output;
                }
            }
            i += if fused_next { 2 } else { 1 };
        }
        current
    }

    /// Per-sample node offsets, with the total at the end.
    pub fn node_offsets(&self) -> Vec<usize> {
        let mut offsets = vec![0];
        for size in &self.node_sizes {
            offsets.push(offsets.last().expect("non-empty") + size);
        }
        offsets
    }

    pub fn param_count(&self) -> usize {
        self.params.last().map_or(0, |p| p.range.end)
    }
}

impl Plan {
    pub fn buffer_count(&self) -> usize {
        self.buffers.last().map_or(0, |p| p.range.end)
    }
}

/// Gates per hidden unit (PyTorch's `G`): 1 for RNN, 4 for LSTM, 3 for GRU.
pub fn gates(cell: Cell) -> usize {
    match cell {
        Cell::Rnn => 1,
        Cell::Lstm => 4,
        Cell::Gru => 3,
    }
}

/// Per-sample auxiliary values of a recurrent layer (the runtime's
/// `RecurrentShape::aux_len`).
fn recurrent_aux_len(cell: Cell, steps: usize, hidden: usize) -> usize {
    let all_gates = steps * gates(cell) * hidden;
    match cell {
        Cell::Rnn => all_gates,
        Cell::Lstm => all_gates + (steps + 2) * hidden,
        Cell::Gru => 2 * all_gates,
    }
}
