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

use crate::check::{Act, Checked, Layer, Op};
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

/// One parameter tensor.
pub struct ParamPlan {
    pub name: String,
    pub shape: Vec<usize>,
    pub range: Range<usize>,
    pub fan_in: usize,
    pub regularized: bool,
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
            | Step::Activation { input, .. }
            | Step::Softmax { input, .. }
            | Step::Dropout { input, .. } => vec![input],
            Step::Residual { input, inner, .. } => vec![input, inner],
        }
    }

    pub fn output(&self) -> usize {
        match *self {
            Step::Dense { output, .. }
            | Step::Activation { output, .. }
            | Step::Softmax { output, .. }
            | Step::Dropout { output, .. }
            | Step::Residual { output, .. } => output,
        }
    }

    pub fn has_params(&self) -> bool {
        matches!(self, Step::Dense { .. })
    }
}

/// Buffers and steps of a model.
pub struct Plan {
    /// Per-sample size of each node.
    pub node_sizes: Vec<usize>,
    pub params: Vec<ParamPlan>,
    pub steps: Vec<Step>,
    pub output_node: usize,
}

impl Plan {
    fn new(checked: &Checked) -> Self {
        let mut plan = Plan {
            node_sizes: vec![checked.input.iter().product()],
            params: Vec::new(),
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
        fan_in: usize,
        regularized: bool,
    ) -> Range<usize> {
        let start = self.params.last().map_or(0, |p| p.range.end);
        let range = start..start + shape.iter().product::<usize>();
        self.params.push(ParamPlan {
            name,
            shape,
            range: range.clone(),
            fan_in,
            regularized,
        });
        range
    }

    /// Plans a layer list fed from node `current`; returns the node of its output.
    fn layers(&mut self, layers: &[Layer], mut current: usize) -> usize {
        let mut i = 0;
        while i < layers.len() {
            let layer = &layers[i];
            let size: usize = layer.output.iter().product();
            let name = layer.name.clone();
            match &layer.op {
                Op::Dense { units, bias } => {
                    let in_features = *layer.input.last().expect("rank >= 1");
                    let rows_per_sample = layer.input.iter().product::<usize>() / in_features;
                    let fused = match layers.get(i + 1).map(|l| &l.op) {
                        Some(Op::Activation(act)) if act.fusable() => Some(*act),
                        _ => None,
                    };
                    let weight = self.param(
                        format!("{name}.weight"),
                        vec![*units, in_features],
                        in_features,
                        true,
                    );
                    let bias = bias.then(|| {
                        self.param(format!("{name}.bias"), vec![*units], in_features, false)
                    });
                    let output = self.node(size);
                    self.steps.push(Step::Dense {
                        input: current,
                        output,
                        in_features,
                        out_features: *units,
                        rows_per_sample,
                        weight,
                        bias,
                        fused,
                    });
                    current = output;
                    if fused.is_some() {
                        i += 1;
                    }
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
            i += 1;
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
