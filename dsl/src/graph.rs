//! Models that are graphs: named inputs, nodes that each read an input or an earlier
//! node (or several, merged), and named outputs.
//!
//! ```text
//! inputs: { image: [1, 28, 28], meta: [4] },
//! trunk: image >> { Conv2d(8, kernel = 3), Relu, Flatten },
//! joined: Concat(trunk, meta) >> { Dense(64), Relu },
//! outputs: { digit: joined >> Dense(10), big: joined >> Dense(2) },
//! ```
//!
//! A node's layers are one layer named after the node (`digit.weight`) or a sequence
//! in braces, named as a branch is (`trunk.0.weight`). The whole graph is one layer
//! of the model, [`GraphOp`], whose steps are its nodes' in order: the inputs are
//! copied out of the packed input (each sample's inputs one after the other; one
//! input is the model's input as it is), merges reuse the merge blocks' step (a sum
//! applying the fusable activation its node's layers start with), and the
//! outputs are packed into the model's output the same way. Nothing else in the
//! pipeline needs to know: the backward pass's gradient flow already sums the
//! gradients of a node read by several others.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use quote::quote;

use crate::blocks;
use crate::check::{check_dims, dims, unraw, Checked, Checker, Layer, Ports};
use crate::codegen::Plan;
use crate::layers::activation::Act;
use crate::layers::merge::{merged_shape, push_merge, Merge};
use crate::layers::onnx::{ints, node, reshape_input, temp, value_node, StepShapes};
use crate::layers::{self, size, GradFlow, Op, Step};
use crate::parse::{Graph, GraphNode, Item, ModelDef, Source};

/// An input or a node of the graph.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ref {
    Input(usize),
    Node(usize),
}

/// What a node reads.
enum From {
    One(Ref),
    Merge {
        merge: Merge,
        refs: Vec<Ref>,
        shapes: Vec<Vec<usize>>,
        shape: Vec<usize>,
    },
}

struct NodeOp {
    from: From,
    /// The index of its layer in [`GraphOp::layers`], if it has layers.
    layer: Option<usize>,
}

/// The graph as one layer of the model.
pub struct GraphOp {
    inputs: Vec<Vec<usize>>,
    nodes: Vec<NodeOp>,
    /// The node of each output.
    outputs: Vec<usize>,
    output_shapes: Vec<Vec<usize>>,
    layers: Vec<Layer>,
    /// `(input, vocabulary)` of each input an `Embedding` reads.
    tokens: Vec<(usize, usize)>,
    /// The names of the inputs and of the nodes, which layer arguments may read.
    input_names: Vec<String>,
    node_names: Vec<String>,
}

/// Checks the graph: its inputs, each node's source and layers, its outputs, and that
/// everything computed is used. Errors go to `checker`; `None` if there were any.
pub fn check(def: &ModelDef, graph: &Graph, checker: &mut Checker) -> Option<Checked> {
    let mut known: HashMap<String, (Ref, Span)> = HashMap::new();
    let mut input_shapes = Vec::new();
    for (k, (name, decl)) in graph.inputs.iter().enumerate() {
        let text = name.to_string();
        if let Some(&(_, first)) = known.get(&text) {
            checker.push(
                name.span(),
                format!("duplicate input `{text}`; each input needs its own name"),
            );
            checker.push(first, format!("`{text}` is first declared here"));
        } else {
            known.insert(text, (Ref::Input(k), name.span()));
        }
        input_shapes.push(check_dims(decl, &mut checker.errors));
    }
    // Uses of defined blocks, expanded in every node's layers at once (so that a
    // mistake in a definition is reported once).
    let all: Vec<&GraphNode> = graph.nodes.iter().chain(&graph.outputs).collect();
    let items: Vec<Item> = all.iter().filter_map(|n| n.item.clone()).collect();
    let expanded = blocks::expand(&def.blocks, &items, &mut checker.errors);
    checker
        .names
        .collect_user_names(&expanded, "", &mut checker.errors);
    let mut expanded = expanded.into_iter();
    let mut walk = Walk {
        known,
        input_shapes,
        node_shapes: Vec::new(),
        inputs_read: vec![false; graph.inputs.len()],
        nodes_read: Vec::new(),
        node_names: Vec::new(),
    };
    let mut nodes = Vec::new();
    let mut layers = Vec::new();
    let mut tokens = Vec::new();
    // Each output's name, node and span.
    let mut outputs: Vec<(String, usize, Span)> = Vec::new();
    for (index, graph_node) in all.iter().enumerate() {
        let is_output = index >= graph.nodes.len();
        let name = graph_node.name.to_string();
        let span = graph_node.name.span();
        let item = graph_node.item.as_ref().and_then(|_| expanded.next());
        if is_output {
            if let Some(&(_, _, first)) = outputs.iter().find(|(n, _, _)| *n == name) {
                checker.push(span, format!("output `{name}` is listed twice"));
                checker.push(first, format!("`{name}` is first listed here"));
                continue;
            }
        }
        // A bare output: the node of that name.
        if is_output && item.is_none() {
            if let Source::Node(id) = &graph_node.source {
                if *id == graph_node.name {
                    match walk.lookup(checker, id) {
                        Some(Ref::Input(_)) => output_is_input(checker, span, &name),
                        Some(Ref::Node(node)) => outputs.push((name, node, span)),
                        None => {}
                    }
                    continue;
                }
            }
        }
        let fresh = match walk.known.get(&name) {
            Some(&(seen, first)) => {
                let what = match seen {
                    Ref::Input(_) => "an input",
                    Ref::Node(_) => "a node",
                };
                checker.push(
                    span,
                    format!("`{name}` is already {what}; each input and node needs its own name"),
                );
                checker.push(first, format!("`{name}` is first defined here"));
                false
            }
            None => true,
        };
        let (from, source_shape) = match walk.source(checker, &name, &graph_node.source) {
            Some((from, shape)) => (Some(from), shape),
            None => (None, None),
        };
        let reads_input = matches!(from, Some(From::One(Ref::Input(_))));
        if is_output && item.is_none() && reads_input {
            output_is_input(checker, span, &name);
        }
        let (layer, shape) = match &item {
            Some(item) => {
                check_tokens(item, reads_input, checker);
                let before = layers.len();
                checker.visible = Some(walk.visible());
                let shape = checker.item(item, 0, source_shape, &mut layers);
                checker.visible = None;
                for id in std::mem::take(&mut checker.read) {
                    walk.lookup(checker, &id);
                }
                let layer = (layers.len() > before).then(|| layers.len() - 1);
                if let (Some(From::One(Ref::Input(k))), Some(at)) = (&from, layer) {
                    if let Some(vocab) = first_vocab(&layers[at]) {
                        tokens.push((*k, vocab));
                    }
                }
                (layer, shape)
            }
            None => (None, source_shape),
        };
        let node = walk.node_shapes.len();
        walk.node_shapes.push(shape);
        walk.nodes_read.push(false);
        walk.node_names.push((name.clone(), span));
        if fresh {
            walk.known.insert(name.clone(), (Ref::Node(node), span));
        }
        if is_output {
            outputs.push((name, node, span));
        }
        if let Some(from) = from {
            nodes.push(NodeOp { from, layer });
        }
    }
    // Rule: every input is read, and every node is read or is an output. (Not after
    // another mistake, which may be why something is not read.)
    if checker.errors.any() {
        return None;
    }
    for (k, (name, _)) in graph.inputs.iter().enumerate() {
        if !walk.inputs_read[k] {
            checker.push(name.span(), format!("input `{name}` is read by no node"));
        }
    }
    for (node, (name, span)) in walk.node_names.iter().enumerate() {
        let output = outputs.iter().any(|&(_, n, _)| n == node);
        if !walk.nodes_read[node] && !output {
            checker.push(
                *span,
                format!("node `{name}` is read by no node and is not an output"),
            );
        }
    }
    if outputs.is_empty() {
        return None;
    }
    // With any error, `nodes` may lack a node whose source failed: stop here.
    if nodes.len() != walk.node_shapes.len() {
        return None;
    }
    // Rule: the model computes something.
    let merges = nodes.iter().any(|n| matches!(n.from, From::Merge { .. }));
    if !merges && layers.iter().all(|layer| !layer.op.computes()) {
        checker.push(
            def.name.span(),
            "the model computes nothing: its layers only pass the inputs on",
        );
        return None;
    }
    let inputs: Vec<Vec<usize>> = walk.input_shapes.into_iter().collect::<Option<_>>()?;
    let node_shapes: Vec<Vec<usize>> = walk.node_shapes.into_iter().collect::<Option<_>>()?;
    let output_shapes: Vec<Vec<usize>> = outputs
        .iter()
        .map(|&(_, n, _)| node_shapes[n].clone())
        .collect();
    let packed = |shapes: &[Vec<usize>]| -> Vec<usize> {
        match shapes {
            [only] => only.clone(),
            _ => vec![shapes.iter().map(|s| size(s)).sum()],
        }
    };
    let (input, output) = (packed(&inputs), packed(&output_shapes));
    let ports = Ports {
        inputs: graph
            .inputs
            .iter()
            .zip(&inputs)
            .map(|((name, _), shape)| (unraw(name), shape.clone()))
            .collect(),
        outputs: outputs
            .iter()
            .zip(&output_shapes)
            .map(|((name, _, _), shape)| (name.trim_start_matches("r#").into(), shape.clone()))
            .collect(),
    };
    let op = GraphOp {
        inputs,
        nodes,
        outputs: outputs.iter().map(|&(_, n, _)| n).collect(),
        output_shapes,
        layers,
        tokens,
        input_names: graph
            .inputs
            .iter()
            .map(|(name, _)| name.to_string())
            .collect(),
        node_names: walk
            .node_names
            .iter()
            .map(|(name, _)| name.clone())
            .collect(),
    };
    let list = |named: &[(String, Vec<usize>)]| -> String {
        let shown: Vec<String> = named
            .iter()
            .map(|(n, s)| format!("{n}: {}", dims(s)))
            .collect();
        shown.join(", ")
    };
    let display = format!("Graph({} -> {})", list(&ports.inputs), list(&ports.outputs));
    Some(Checked {
        input: input.clone(),
        output: output.clone(),
        layers: vec![Layer {
            name: "graph".into(),
            display,
            op: Box::new(op),
            input,
            output,
        }],
        ports: Some(ports),
    })
}

/// Rule: an output is computed by at least one layer, not an input passed on.
fn output_is_input(checker: &mut Checker, at: Span, name: &str) {
    checker.push(
        at,
        format!("output `{name}` is an input: an output is computed by at least one layer"),
    );
}

/// The names and shapes known so far, and which have been read.
struct Walk {
    known: HashMap<String, (Ref, Span)>,
    input_shapes: Vec<Option<Vec<usize>>>,
    node_shapes: Vec<Option<Vec<usize>>>,
    inputs_read: Vec<bool>,
    nodes_read: Vec<bool>,
    node_names: Vec<(String, Span)>,
}

impl Walk {
    /// The inputs and nodes defined so far, with their shapes.
    fn visible(&self) -> Vec<(String, Option<Vec<usize>>)> {
        self.known
            .iter()
            .map(|(name, &(r, _))| (name.clone(), self.shape(r)))
            .collect()
    }

    /// The input or earlier node called `id`, marked as read. Rule: a node reads
    /// inputs and nodes defined before it.
    fn lookup(&mut self, checker: &mut Checker, id: &syn::Ident) -> Option<Ref> {
        let text = id.to_string();
        let Some(&(found, _)) = self.known.get(&text) else {
            let mut names: Vec<&str> = self.known.keys().map(String::as_str).collect();
            names.sort_unstable();
            checker.push(
                id.span(),
                format!(
                    "unknown input or node `{text}`: a node reads an input or a node defined before it ({})",
                    names.join(", ")
                ),
            );
            return None;
        };
        match found {
            Ref::Input(k) => self.inputs_read[k] = true,
            Ref::Node(n) => self.nodes_read[n] = true,
        }
        Some(found)
    }

    fn shape(&self, r: Ref) -> Option<Vec<usize>> {
        match r {
            Ref::Input(k) => self.input_shapes[k].clone(),
            Ref::Node(n) => self.node_shapes[n].clone(),
        }
    }

    /// What node `name` reads, and its shape (`None` if unknown after an error).
    fn source(
        &mut self,
        checker: &mut Checker,
        name: &str,
        source: &Source,
    ) -> Option<(From, Option<Vec<usize>>)> {
        match source {
            Source::Node(id) => {
                let r = self.lookup(checker, id)?;
                Some((From::One(r), self.shape(r)))
            }
            Source::Merge { kind, nodes } => {
                let merge = Merge::from_kind(&kind.to_string());
                if merge.is_none() {
                    checker.push(
                        kind.span(),
                        format!(
                            "unknown merge `{kind}`: a node merges inputs and nodes with `Concat(a, b)`, `Add(a, b)` or `Mul(a, b)`"
                        ),
                    );
                }
                if nodes.len() < 2 {
                    checker.push(
                        kind.span(),
                        format!("{name}: `{kind}` merges at least two inputs or nodes"),
                    );
                    return None;
                }
                let mut refs = Vec::new();
                let mut ok = merge.is_some();
                for (i, id) in nodes.iter().enumerate() {
                    if nodes[..i].contains(id) {
                        checker.push(id.span(), format!("{name}: `{id}` is merged twice"));
                        ok = false;
                    }
                    match self.lookup(checker, id) {
                        Some(r) => refs.push(r),
                        None => ok = false,
                    }
                }
                let merge = merge.filter(|_| ok)?;
                let shapes: Option<Vec<Vec<usize>>> = refs.iter().map(|&r| self.shape(r)).collect();
                let Some(shapes) = shapes else {
                    return Some((
                        From::Merge {
                            merge,
                            refs,
                            shapes: Vec::new(),
                            shape: Vec::new(),
                        },
                        None,
                    ));
                };
                match merged_shape(merge, &shapes) {
                    Ok(shape) => Some((
                        From::Merge {
                            merge,
                            refs,
                            shapes,
                            shape: shape.clone(),
                        },
                        Some(shape),
                    )),
                    Err((other, what)) => {
                        checker.push(
                            nodes[other].span(),
                            format!(
                                "{name}: `{kind}` inputs disagree on {what}: {} gives {} but {} gives {}",
                                nodes[0],
                                dims(&shapes[0]),
                                nodes[other],
                                dims(&shapes[other])
                            ),
                        );
                        None
                    }
                }
            }
        }
    }
}

/// Rule: an `Embedding` reads token ids, so in a graph it is the first layer of a
/// node that reads an input.
fn check_tokens(item: &Item, reads_input: bool, checker: &mut Checker) {
    fn walk(items: &[Item], first_ok: bool, checker: &mut Checker) {
        for (index, item) in items.iter().enumerate() {
            let kind = item.kind.to_string();
            let reads = layers::find(&kind).is_some_and(|spec| spec.reads_tokens);
            if reads && !(first_ok && index == 0) {
                checker.push(
                    item.span(),
                    format!(
                        "an `{kind}` reads token ids and must be the first layer of a node that reads a model input"
                    ),
                );
            }
            if let Some(block) = &item.block {
                // The first layer of a node's sequence comes first.
                let sequence = kind == "Sequential";
                walk(&block.items, first_ok && index == 0 && sequence, checker);
            }
        }
    }
    walk(std::slice::from_ref(item), reads_input, checker);
}

/// The vocabulary of the embedding that a node's layer starts with, if it does.
fn first_vocab(layer: &Layer) -> Option<usize> {
    layer
        .op
        .token_vocab()
        .or_else(|| layer.op.children().first().and_then(first_vocab))
}

impl Op for GraphOp {
    fn flops(&self, _: &Layer) -> u64 {
        self.nodes
            .iter()
            .map(|node| match &node.from {
                From::Merge {
                    merge: Merge::Sum | Merge::Product,
                    refs,
                    shape,
                    ..
                } => ((refs.len() - 1) * size(shape)) as u64,
                _ => 0,
            })
            .sum()
    }

    fn children(&self) -> &[Layer] {
        &self.layers
    }

    fn plan(&self, _: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        // Each input's own node: the model's input for one, else a copy of its columns.
        let total: usize = self.inputs.iter().map(|s| size(s)).sum();
        let mut offset = 0;
        let mut input_nodes = Vec::new();
        for shape in &self.inputs {
            if self.inputs.len() == 1 {
                input_nodes.push(input);
                continue;
            }
            let width = size(shape);
            let output = plan.node(width);
            plan.push(SliceStep {
                input,
                output,
                offset,
                width,
                total,
            });
            input_nodes.push(output);
            offset += width;
        }
        let mut offsets = Vec::new();
        let mut at = 0;
        for shape in &self.inputs {
            offsets.push(at);
            at += size(shape);
        }
        for &(k, vocab) in &self.tokens {
            plan.reads_tokens = true;
            plan.token_columns
                .push((offsets[k], size(&self.inputs[k]), vocab));
        }
        plan.input_nodes = input_nodes.clone();
        for (name, &id) in self.input_names.iter().zip(&input_nodes) {
            plan.named_nodes.insert(name.clone(), id);
        }
        let mut node_ids: Vec<usize> = Vec::new();
        let resolve = |r: Ref, node_ids: &[usize]| match r {
            Ref::Input(k) => input_nodes[k],
            Ref::Node(n) => node_ids[n],
        };
        for node in &self.nodes {
            let mut layers = node.layer.map(|at| std::slice::from_ref(&self.layers[at]));
            let source = match &node.from {
                From::One(r) => resolve(*r, &node_ids),
                From::Merge {
                    merge,
                    refs,
                    shapes,
                    shape,
                } => {
                    let ids = refs.iter().map(|&r| resolve(r, &node_ids)).collect();
                    // A sum applies the activation its node's layers start with.
                    let mut fused = None;
                    if *merge == Merge::Sum {
                        if let Some((act, rest)) = layers.and_then(|l| leading_activation(&l[0])) {
                            fused = Some(act);
                            layers = Some(rest);
                        }
                    }
                    push_merge(plan, *merge, ids, shapes, shape, fused)
                }
            };
            let out = match layers {
                Some(layers) => plan.layers(layers, source),
                None => source,
            };
            plan.named_nodes
                .insert(self.node_names[node_ids.len()].clone(), out);
            node_ids.push(out);
        }
        let ids: Vec<usize> = self.outputs.iter().map(|&n| node_ids[n]).collect();
        plan.output_nodes = ids.clone();
        if let [only] = ids[..] {
            return only;
        }
        let flat: Vec<Vec<usize>> = self.output_shapes.iter().map(|s| vec![size(s)]).collect();
        let packed = vec![flat.iter().map(|s| s[0]).sum()];
        push_merge(plan, Merge::Concat, ids, &flat, &packed, None)
    }
}

/// The activation that a node's layers start with, if it is fusable (its derivative a
/// function of its output: `Add(a, b) >> Relu`, `Add(a, b) >> { Relu, Dense(64) }`),
/// and the layers after it. A sum node applies it as it adds (as an `Add` block
/// followed by `Relu` does), so it gets no tensor or pass of its own.
fn leading_activation(layer: &Layer) -> Option<(Act, &[Layer])> {
    if let Some(act) = layer.op.fusable_activation() {
        return Some((act, &[]));
    }
    let (first, rest) = layer.op.sequence()?.split_first()?;
    Some((first.op.fusable_activation()?, rest))
}

/// Copies columns `offset..offset + width` of each sample of the packed input (rows
/// of `total`) into the node of one input.
struct SliceStep {
    input: usize,
    output: usize,
    offset: usize,
    width: usize,
    total: usize,
}

impl Step for SliceStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn onnx(&self, _: &StepShapes) -> Option<Vec<TokenStream>> {
        let out = self.output;
        let (from, to) = (self.offset as i64, (self.offset + self.width) as i64);
        Some(vec![
            reshape_input(self.input, out, &[self.total]),
            node(
                "Slice",
                &[temp(out, 0), ints(&[from]), ints(&[to]), ints(&[1])],
                value_node(out),
                &[],
            ),
        ])
    }

    fn forward(&self) -> TokenStream {
        let SliceStep {
            input,
            output,
            offset,
            total,
            ..
        } = self;
        quote! {
            {
                let io = ws.forward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::concat_backward::<T>(
                    io.output, ::kiln::__private::layers::Accum::Replace, io.input, #offset, #total,
                );
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let SliceStep {
            input,
            output,
            offset,
            total,
            ..
        } = self;
        // The inputs' columns are disjoint and each is written once: always replace.
        flow.write(*input);
        quote! {
            {
                let io = ws.backward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::slice_backward::<T>(io.grad_input, io.grad_output, #offset, #total);
            }
        }
    }
}
