//! Checked model to Rust: the plan of buffers and steps, then one generated item per
//! file.
//!
//! The plan numbers the workspace nodes (node 0 is the input; every layer that
//! computes writes a new node; `Flatten` only renames the shape), lays out the
//! parameters in PyTorch's order and lets a GEMM layer (dense, convolution) apply a
//! following activation whose derivative can be read off its output. Each layer plans
//! itself ([`crate::layers::Op::plan`]); the emitted code is straight-line calls into
//! `::kiln::__private::layers` with const dimensions.

mod model_impl;
mod model_struct;
mod passes;
mod ports;

use std::ops::Range;

use proc_macro2::{Group, Literal, TokenStream, TokenTree};
use quote::quote;

use crate::check::{Checked, Layer};
use crate::layers::Step;
use crate::parse::ModelDef;

/// Emits the model for a definition that passed every check.
pub fn emit(def: &ModelDef, checked: &Checked) -> TokenStream {
    let plan = Plan::new(checked);
    let (structure, inherent) = model_struct::emit(def, checked, &plan);
    let model = model_impl::emit(def, checked, &plan);
    let customs = custom_consts(&plan);
    let (port_types, port_items) = ports::emit(def, checked, &plan);
    unsuffixed(quote! {
        #structure
        #port_types
        const _: () = {
            #customs
            #inherent
            #model
            #port_items
        };
    })
}

/// For a model with user layers: the checks of each, where each one's parameters,
/// buffers and fixed scratch start (`__KILN_PARAM_AT`, `__KILN_BUFFER_AT`,
/// `__KILN_FIXED_AT`, each with the total at the end) and the number of counted nodes,
/// after which their saved scratch lies.
fn custom_consts(plan: &Plan) -> TokenStream {
    if plan.customs.is_empty() {
        return TokenStream::new();
    }
    let checks = plan.customs.iter().map(|c| &c.checks);
    let starts = |name: &str, counted: usize, len: &dyn Fn(&TokenStream) -> TokenStream| {
        let name = quote::format_ident!("{}", name);
        let count = plan.customs.len() + 1;
        let lens = plan.customs.iter().map(|c| len(&c.layer));
        quote! {
            const #name: [::core::primitive::usize; #count] = {
                let mut at = [#counted; #count];
                let lens = [#(#lens),*];
                let mut k = 0;
                while k < lens.len() {
                    at[k + 1] = at[k] + lens[k];
                    k += 1;
                }
                at
            };
        }
    };
    let params = starts(
        "__KILN_PARAM_AT",
        plan.param_count(),
        &|layer| quote!(::kiln::__private::total_len(#layer::PARAMS)),
    );
    let buffers = starts(
        "__KILN_BUFFER_AT",
        plan.buffer_count(),
        &|layer| quote!(::kiln::__private::total_len(#layer::BUFFERS)),
    );
    let fixed = starts(
        "__KILN_FIXED_AT",
        plan.fixed,
        &|layer| quote!(#layer::FIXED),
    );
    let nodes = plan.node_sizes.len();
    quote! {
        #(#checks)*
        #params
        #buffers
        #fixed
        const __KILN_NODES: ::core::primitive::usize = #nodes;
    }
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
    let mut tokens = quote! {
        #(#attrs)*
        #vis struct #name<T = ::core::primitive::f32>(::core::marker::PhantomData<T>);
    };
    // A graph's structs of inputs and outputs too, with the fields as written, so that
    // code building them reports nothing more.
    if let Some(graph) = &def.graph {
        let inputs = quote::format_ident!("{}Inputs", name);
        let outputs = quote::format_ident!("{}Outputs", name);
        let fields = |names: Vec<&syn::Ident>| -> (Vec<syn::Ident>, Vec<syn::Ident>) {
            let mut seen: Vec<String> = Vec::new();
            let mut kept = Vec::new();
            for n in names {
                if !seen.contains(&n.to_string()) {
                    seen.push(n.to_string());
                    kept.push(n.clone());
                }
            }
            let params = (0..kept.len())
                .map(|k| quote::format_ident!("P{k}"))
                .collect();
            (kept, params)
        };
        let (in_fields, in_params) = fields(graph.inputs.iter().map(|(n, _)| n).collect());
        let (out_fields, out_params) = fields(graph.outputs.iter().map(|n| &n.name).collect());
        tokens.extend(quote! {
            #vis struct #inputs<#(#in_params),*> { #(pub #in_fields: #in_params,)* }
            #vis struct #outputs<#(#out_params),*> { #(pub #out_fields: #out_params,)* }
        });
    }
    tokens
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

/// A user layer in the plan. Its parameters come after every counted one, in the
/// order of the layers (`__KILN_PARAM_AT[k]..__KILN_PARAM_AT[k + 1]`), and its saved
/// scratch is a node after every counted one (`__KILN_NODES + k`), so that the
/// constants the macro cannot evaluate only ever extend the tables.
pub struct CustomPlan {
    /// `<Type as ::kiln::__private::Layer>`.
    pub layer: TokenStream,
    /// The layer's full name, which its tensors' names follow.
    pub scope: String,
    /// Constants that check the type against the use.
    pub checks: TokenStream,
}

/// Buffers and steps of a model.
pub struct Plan {
    /// Per-sample size of each node.
    pub node_sizes: Vec<usize>,
    pub params: Vec<ParamPlan>,
    pub buffers: Vec<ParamPlan>,
    /// Batch-independent scratch, in values.
    pub fixed: usize,
    pub steps: Vec<Box<dyn Step>>,
    /// Per step: the end of the parameters laid out up to it (its own included), which
    /// the backward pass compares with the first trainable offset to skip the steps
    /// before every trainable layer.
    pub step_param_ends: Vec<usize>,
    pub output_node: usize,
    /// For a model with named outputs: the node of each, in order.
    pub output_nodes: Vec<usize>,
    /// For a model with named inputs: the node of each, in order.
    pub input_nodes: Vec<usize>,
    /// Whether the first layer reads token ids (which have no gradient).
    pub reads_tokens: bool,
    /// The named inputs that an `Embedding` reads: `(offset, len, vocab)` within a
    /// sample of the packed input.
    pub token_columns: Vec<(usize, usize, usize)>,
    /// The user layers, in order.
    pub customs: Vec<CustomPlan>,
    /// Per step: how its layer reads (`Lstm(64)`) and its input and output shapes.
    pub step_layers: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// In a graph model: the node of each input and of each node planned so far, by
    /// name, for the layers whose arguments read them.
    pub named_nodes: std::collections::HashMap<String, usize>,
    /// The layer being planned.
    current: (String, Vec<usize>, Vec<usize>),
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
            step_param_ends: Vec::new(),
            output_node: 0,
            output_nodes: Vec::new(),
            input_nodes: Vec::new(),
            reads_tokens: checked
                .layers
                .first()
                .is_some_and(|l| l.op.token_vocab().is_some()),
            token_columns: Vec::new(),
            customs: Vec::new(),
            step_layers: Vec::new(),
            named_nodes: std::collections::HashMap::new(),
            current: (String::new(), Vec::new(), Vec::new()),
        };
        plan.output_node = plan.layers(&checked.layers, 0);
        plan
    }

    /// A new workspace node of `size` values per sample.
    pub fn node(&mut self, size: usize) -> usize {
        self.node_sizes.push(size);
        self.node_sizes.len() - 1
    }

    /// A trainable tensor, after the ones before it.
    pub fn param(
        &mut self,
        name: String,
        shape: Vec<usize>,
        init: InitPlan,
        regularized: bool,
    ) -> Range<usize> {
        push_tensor(&mut self.params, name, shape, init, regularized, false)
    }

    /// A non-trainable tensor (running statistics); `count` if it is saved as one
    /// I64 count.
    pub fn buffer(
        &mut self,
        name: String,
        shape: Vec<usize>,
        init: InitPlan,
        count: bool,
    ) -> Range<usize> {
        push_tensor(&mut self.buffers, name, shape, init, false, count)
    }

    /// `len` values of batch-independent scratch.
    pub fn fixed(&mut self, len: usize) -> Range<usize> {
        self.fixed += len;
        self.fixed - len..self.fixed
    }

    /// Registers a user layer; returns its index among them.
    pub fn custom(&mut self, custom: CustomPlan) -> usize {
        self.customs.push(custom);
        self.customs.len() - 1
    }

    /// Appends a kernel call to the passes.
    pub fn push(&mut self, step: impl Step + 'static) {
        self.step_param_ends.push(self.param_count());
        self.steps.push(Box::new(step));
        self.step_layers.push(self.current.clone());
    }

    /// Plans a layer list fed from node `current`; returns the node of its output.
    pub fn layers(&mut self, layers: &[Layer], mut current: usize) -> usize {
        // A block plans its layers through here, then pushes its own step: as its own.
        let block = self.current.clone();
        let mut i = 0;
        while i < layers.len() {
            let layer = &layers[i];
            let fused = if layer.op.takes_activation() {
                layers
                    .get(i + 1)
                    .and_then(|next| next.op.fusable_activation())
            } else {
                None
            };
            self.current = (
                layer.display.clone(),
                layer.input.clone(),
                layer.output.clone(),
            );
            current = layer.op.plan(layer, self, current, fused);
            i += if fused.is_some() { 2 } else { 1 };
        }
        self.current = block;
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

    pub fn buffer_count(&self) -> usize {
        self.buffers.last().map_or(0, |p| p.range.end)
    }
}
