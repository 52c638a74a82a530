//! One module per layer family, mirroring `runtime/src/layers/`: everything the macro
//! knows about a layer lives in its family's module.
//!
//! A family declares its DSL names in a table of [`LayerSpec`]s (arguments, usage hint,
//! and the `check` function that binds the arguments and applies the shape rule). A
//! checked layer is an [`Op`]: it counts its parameters and FLOPs and plans its
//! buffers, pushing a [`Step`] that emits its forward and backward kernel calls. The
//! generic pipeline (`check.rs`, `codegen/`) walks these traits and never names a
//! layer. Adding a layer is its module here, its kernels in the runtime, tests and docs.

pub mod activation;
pub mod attention;
pub mod batchnorm;
pub mod conv;
pub mod conv_transpose;
pub mod custom;
pub mod dense;
pub mod dropout;
pub mod flatten;
pub mod merge;
pub mod onnx;
pub mod pool;
pub mod recurrent;
pub mod repeat;
pub mod residual;
pub mod sequential;
pub mod softmax;
pub mod transformer;
pub mod upsample;

use std::ops::Range;

use proc_macro2::{Span, TokenStream};
use quote::quote;

use crate::check::{Checker, Layer, Value};
use crate::codegen::Plan;
use crate::parse::Item;
use activation::Act;

/// Every family's layers, in the order unknown-layer suggestions consider them.
const FAMILIES: &[&[LayerSpec]] = &[
    dense::SPECS,
    activation::SPECS,
    softmax::SPECS,
    flatten::SPECS,
    dropout::SPECS,
    conv::SPECS,
    pool::SPECS,
    conv_transpose::SPECS,
    upsample::SPECS,
    recurrent::SPECS,
    attention::SPECS,
    transformer::SPECS,
    batchnorm::SPECS,
    residual::SPECS,
    sequential::SPECS,
    merge::SPECS,
    repeat::SPECS,
    custom::SPECS,
];

/// Every layer of the DSL.
pub fn specs() -> impl Iterator<Item = &'static LayerSpec> {
    FAMILIES.iter().flat_map(|family| family.iter())
}

/// The layer the DSL calls `kind`, if any.
pub fn find(kind: &str) -> Option<&'static LayerSpec> {
    specs().find(|spec| spec.name == kind)
}

/// How an argument is written.
#[derive(Clone, Copy, PartialEq)]
pub enum ArgKind {
    Int,
    Float,
    Bool,
    /// An integer or a `(height, width)` pair of integers.
    Pair,
    /// One of a few names, written bare or quoted (`mode = bilinear`).
    Choice(&'static [&'static str]),
    /// The name of an input or an earlier node of a graph model (`memory = enc`).
    Node,
}

/// One argument of a layer.
pub struct ArgSpec {
    pub name: &'static str,
    pub kind: ArgKind,
    pub required: bool,
    /// The largest integer it takes ([`MAX_ARG`](crate::check::MAX_ARG) unless set).
    pub max: usize,
}

/// `ArgSpec` in a table.
pub const fn arg(name: &'static str, kind: ArgKind, required: bool) -> ArgSpec {
    ArgSpec {
        name,
        kind,
        required,
        max: crate::check::MAX_ARG,
    }
}

impl ArgSpec {
    /// This argument, taking integers up to `max`.
    pub const fn up_to(self, max: usize) -> Self {
        Self { max, ..self }
    }
}

/// Binds a call's arguments and input shape into a layer (with its output shape), or
/// reports every mistake and returns `None`. Arguments are checked even when the input
/// shape is unknown after an earlier error.
pub type CheckFn = fn(&mut Checker, &Call) -> Option<Checked>;

/// What a family's `check` returns: the layer and its output shape.
pub type Checked = (Box<dyn Op>, Vec<usize>);

/// A layer the DSL knows: its name, arguments, the hint shown when an argument is
/// missing, and its check.
pub struct LayerSpec {
    pub name: &'static str,
    pub args: &'static [ArgSpec],
    /// Whether the layer takes a `{ .. }` block of layers.
    pub block: bool,
    pub usage: &'static str,
    /// Whether the layer computes anything (`Flatten` only renames the shape).
    pub computes: bool,
    /// Whether the layer reads the model's token ids, so it must come first.
    pub reads_tokens: bool,
    /// Whether the names of its block's layers nest under its own (`mixed.b1.conv`).
    pub scoped: Scoping,
    pub check: CheckFn,
}

/// Where a block's layers are named.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scoping {
    /// In the enclosing scope: not a block, or a block transparent to names.
    Never,
    /// Under the block's name, unnamed layers by position (`mixed.b1.0.weight`).
    Always,
    /// Under the block's name if it has one; otherwise in the enclosing scope, unnamed
    /// layers numbered on from the enclosing sequence's (a `Residual` connection
    /// written in a module's forward pass, not a module of its own).
    WhenNamed,
}

impl Scoping {
    /// Whether this use of the block nests its layers' names.
    pub fn nests(self, item: &Item) -> bool {
        match self {
            Scoping::Never => false,
            Scoping::Always => true,
            Scoping::WhenNamed => item.name.is_some(),
        }
    }

    /// Whether this use is transparent to names: its layers take the enclosing
    /// sequence's next positions, and it takes none of its own.
    pub fn transparent(self, item: &Item) -> bool {
        self == Scoping::WhenNamed && item.name.is_none()
    }
}

/// A plain layer (no block, computes, reads values) in a family's table.
pub const fn layer(
    name: &'static str,
    args: &'static [ArgSpec],
    usage: &'static str,
    check: CheckFn,
) -> LayerSpec {
    LayerSpec {
        name,
        args,
        block: false,
        usage,
        computes: true,
        reads_tokens: false,
        scoped: Scoping::Never,
        check,
    }
}

/// One use of a layer, its arguments bound in spec order.
pub struct Call<'a> {
    pub item: &'a Item,
    pub spec: &'static LayerSpec,
    /// The user's or the generated name (`fc1`, `dense_0`).
    pub name: String,
    pub values: Vec<Option<Value>>,
    /// The input shape, or `None` if an earlier mistake left it unknown.
    pub input: Option<Vec<usize>>,
}

impl Call<'_> {
    /// The integer argument `index`, 0 if absent.
    pub fn int(&self, index: usize) -> usize {
        self.values[index].as_ref().map_or(0, Value::int)
    }

    /// The number argument `index`, or `default`.
    pub fn float(&self, index: usize, default: f64) -> f64 {
        self.values[index].as_ref().map_or(default, Value::float)
    }

    /// The boolean argument `index`, or `default`.
    pub fn flag(&self, index: usize, default: bool) -> bool {
        self.values[index].as_ref().map_or(default, Value::bool)
    }

    /// The name the node argument `index` gives, if written.
    pub fn node(&self, index: usize) -> Option<syn::Ident> {
        self.values[index].as_ref()?;
        let written = crate::check::written_arg(self.item, self.spec, index)?;
        crate::check::path_ident(&written.value)
    }

    /// The position of the choice argument `index` among its names, 0 if absent.
    pub fn choice(&self, index: usize) -> usize {
        self.values[index].as_ref().map_or(0, Value::choice)
    }

    /// The span of argument `index` as written, or the layer's kind.
    pub fn arg_span(&self, index: usize) -> Span {
        crate::check::values_span(self.item, self.spec, index)
    }

    /// The span that best points at the layer: its name, else its kind.
    pub fn span(&self) -> Span {
        self.item.span()
    }
}

/// A checked layer: what the generic passes ask of it.
pub trait Op {
    /// Trainable parameter count.
    fn params(&self, _layer: &Layer) -> usize {
        0
    }

    /// Forward FLOPs per sample: 2 per multiply-add in a product, one per bias addition
    /// and per element of an elementwise layer, three per softmax element.
    fn flops(&self, layer: &Layer) -> u64;

    /// Layers nested in a block, listed before the block in summaries.
    fn children(&self) -> &[Layer] {
        &[]
    }

    /// Whether the layer computes anything (`Flatten` and an empty sequence do not).
    fn computes(&self) -> bool {
        true
    }

    /// The activation, if this layer is one whose derivative can be read off its
    /// output, so that a preceding GEMM layer can apply it in its epilogue.
    fn fusable_activation(&self) -> Option<Act> {
        None
    }

    /// Whether the layer applies a following fusable activation itself.
    fn takes_activation(&self) -> bool {
        false
    }

    /// For a sequence (`Sequential`, or a braced node or branch), its layers.
    fn sequence(&self) -> Option<&[Layer]> {
        None
    }

    /// For a user layer, `<Type as Layer>`: its parameter count and FLOPs are that
    /// trait's constants, which the generated code adds to the counted ones.
    fn custom_layer(&self) -> Option<TokenStream> {
        None
    }

    /// The vocabulary, if the layer reads the model's token ids.
    fn token_vocab(&self) -> Option<usize> {
        None
    }

    /// Lays out the layer's parameters, nodes and scratch, pushes its steps and
    /// returns the node of its output. `fused` is the following activation when
    /// [`takes_activation`](Self::takes_activation) and it is fusable.
    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, fused: Option<Act>) -> usize;
}

/// A dense weight whose gradient product `gᵀx` a guarded step defers: its range, the
/// nodes holding `x` (the layer's input) and `g` (the gradient at its pre-activation,
/// which the backward kernel leaves in the output node's gradient), `x`'s width and the
/// fused activation.
pub struct DeferredWeight {
    pub weight: Range<usize>,
    pub input: usize,
    pub output: usize,
    pub in_features: usize,
    /// The activation fused after the layer.
    pub activation: Option<activation::Act>,
}

/// One kernel call of the forward pass, with its backward counterpart.
pub trait Step {
    /// Nodes whose gradient this step's backward writes.
    fn inputs(&self) -> Vec<usize>;

    fn output(&self) -> usize;

    /// The step's trainable parameters, as ranges of the parameter buffer.
    fn param_ranges(&self) -> Vec<Range<usize>> {
        Vec::new()
    }

    /// Whether the step has trainable parameters (a user layer's, which the macro
    /// cannot count, are not in [`param_ranges`](Self::param_ranges)).
    fn has_params(&self) -> bool {
        !self.param_ranges().is_empty()
    }

    /// Whether the step's kernels need the batch size.
    fn uses_batch(&self) -> bool {
        true
    }

    /// Whether the forward kernel reads the mode: `Some(true)` if it draws from its
    /// generator (so needs it mutably), `Some(false)` if it only asks whether it trains.
    fn uses_mode(&self) -> Option<bool> {
        None
    }

    /// Whether the forward kernel reads or writes the non-trainable buffers.
    fn uses_buffers(&self) -> bool {
        false
    }

    /// Whether the backward kernel applies a plain SGD update itself (else the
    /// generic pass applies it to [`param_ranges`](Self::param_ranges) afterwards).
    fn updates_inside(&self) -> bool {
        false
    }

    /// For a dense layer: its weight, whose gradient a guarded SGD step leaves to be
    /// formed after the backward pass (straight into the weight, once every other
    /// gradient and the product's operands are known to be finite).
    fn deferred_weight(&self) -> Option<DeferredWeight> {
        None
    }

    /// The step's ONNX operators (`OnnxNode` expressions) for its layer's shapes, or
    /// `None` if the exporter does not cover it.
    fn onnx(&self, _shapes: &onnx::StepShapes) -> Option<Vec<TokenStream>> {
        None
    }

    /// The forward kernel call, a block over `params`, `buffers`, `ws`, `mode` and
    /// `batch`.
    fn forward(&self) -> TokenStream;

    /// The backward kernel call, over `params`, `grads`, `ws`, `update`, `to_input`
    /// and `batch`; `flow` says how each input's gradient is written.
    fn backward(&self, flow: &mut GradFlow) -> TokenStream;
}

/// The write a step makes to a node's gradient.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum GradWrite {
    /// The first writer: the gradient holds stale values until then.
    Replace,
    /// A later writer, adding to what the first wrote.
    Add,
}

/// Which node gradients the backward pass needs, and whether each has been written
/// yet: a node's gradient is written by each step that reads the node; the first of
/// them (in reverse order) replaces it and the others accumulate.
///
/// Two sets of needs: without the input's gradient (a training step) and with it
/// (`to_input`, asked for at run time). A gradient only the second needs is written
/// under `if to_input`; no node is needed by one unconditional and one conditional
/// write, so the replace-or-add order holds in both.
pub struct GradFlow {
    /// Needed when the input's gradient is asked for.
    pub needed: Vec<bool>,
    /// Needed in any case.
    pub always: Vec<bool>,
    written: Vec<bool>,
}

impl GradFlow {
    pub fn new(needed: Vec<bool>, always: Vec<bool>) -> Self {
        let written = vec![false; needed.len()];
        Self {
            needed,
            always,
            written,
        }
    }

    /// How a write to `node`'s gradient must go (the first write replaces, later ones
    /// add), or `None` if nothing needs it.
    pub fn write(&mut self, node: usize) -> Option<GradWrite> {
        if !self.needed[node] {
            return None;
        }
        let first = !self.written[node];
        self.written[node] = true;
        Some(if first {
            GradWrite::Replace
        } else {
            GradWrite::Add
        })
    }

    /// `Accum::Replace` or `Accum::Add` for a write to `node`'s gradient, or `None`
    /// if nothing needs it.
    pub fn accum(&mut self, node: usize) -> Option<TokenStream> {
        let path = quote!(::kiln::__private::layers::Accum);
        self.write(node).map(|write| match write {
            GradWrite::Replace => quote!(#path::Replace),
            GradWrite::Add => quote!(#path::Add),
        })
    }

    /// [`accum`](Self::accum), with `Replace` for a kernel that always writes (its
    /// step runs only when its input's gradient is needed).
    pub fn accum_or_replace(&mut self, node: usize) -> TokenStream {
        self.accum(node)
            .unwrap_or_else(|| quote!(::kiln::__private::layers::Accum::Replace))
    }

    /// `Some((grad, accum))` for a kernel's optional input gradient, `None` if nothing
    /// needs it, and the choice made at run time if only the input's gradient does.
    pub fn optional(&mut self, node: usize, grad: TokenStream) -> TokenStream {
        let some = quote!(::core::option::Option::Some);
        let none = quote!(::core::option::Option::None);
        match self.accum(node) {
            Some(accum) if self.always[node] => quote!(#some((#grad, #accum))),
            Some(accum) => quote!(if to_input { #some((#grad, #accum)) } else { #none }),
            None => none,
        }
    }
}

/// `a..b`.
pub fn slice(range: &Range<usize>) -> TokenStream {
    let (a, b) = (range.start, range.end);
    quote!(#a..#b)
}

/// `Some(&params[a..b])` or `None`.
pub fn optional_params(range: &Option<Range<usize>>) -> TokenStream {
    match range {
        Some(r) => {
            let r = slice(r);
            quote!(::core::option::Option::Some(&params[#r]))
        }
        None => quote!(::core::option::Option::None),
    }
}

/// `let (w, b) = buffer[..].split_at_mut(..)` (or `let w = &mut buffer[..]` without a
/// bias) over a contiguous weight and bias, and `Some(b)` or `None` to pass on.
pub fn split_weight_bias(
    buffer: TokenStream,
    w: TokenStream,
    b: TokenStream,
    weight: &Range<usize>,
    bias: &Option<Range<usize>>,
) -> (TokenStream, TokenStream) {
    match bias {
        Some(bias) => {
            let (split, all) = (weight.len(), slice(&(weight.start..bias.end)));
            (
                quote!(let (#w, #b) = #buffer[#all].split_at_mut(#split);),
                quote!(::core::option::Option::Some(#b)),
            )
        }
        None => {
            let range = slice(weight);
            (
                quote!(let #w = &mut #buffer[#range];),
                quote!(::core::option::Option::None),
            )
        }
    }
}

/// `let (grad_weight, grad_bias) = ..` over the contiguous weight and bias gradients,
/// and the `Option` of the bias gradient to pass on.
pub fn split_grads(
    weight: &Range<usize>,
    bias: &Option<Range<usize>>,
) -> (TokenStream, TokenStream) {
    split_weight_bias(
        quote!(grads),
        quote!(grad_weight),
        quote!(grad_bias),
        weight,
        bias,
    )
}

/// The product of a shape's dimensions.
pub fn size(shape: &[usize]) -> usize {
    shape.iter().product()
}
