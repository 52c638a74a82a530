//! The transformer's layers: `Embedding(vocab, dim)` (token ids `[steps]` to
//! `[steps, dim]`), `PositionalEmbedding` (a learned `[steps, dim]` table added to its
//! input), `LayerNorm(eps)` over the last axis and `MultiHeadAttention(heads, causal)`
//! over `[steps, dim]` (PyTorch's `nn.MultiheadAttention` parameters).

use std::ops::Range;

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::activation::Act;
use super::onnx::{
    attr_float, attr_int, attr_ints, ints, node, param, reshape_input, scalar, temp, value_node,
    StepShapes,
};
use super::{
    arg, layer, size, slice, ArgKind, Call, CheckFn, Checked, GradFlow, LayerSpec, Op, Scoping,
    Step,
};
use crate::check::{dims, Checker, Layer};
use crate::codegen::{InitPlan, Plan};

pub const SPECS: &[LayerSpec] = &[
    LayerSpec {
        name: "Embedding",
        args: &[
            arg("vocab", ArgKind::Int, true).up_to(crate::check::MAX_VALUES),
            arg("dim", ArgKind::Int, true),
        ],
        block: false,
        usage: "`Embedding(vocab = 65, dim = 64)`",
        computes: true,
        reads_tokens: true,
        scoped: Scoping::Never,
        check: check_embedding as CheckFn,
    },
    layer(
        "PositionalEmbedding",
        &[],
        "`PositionalEmbedding`",
        check_positional,
    ),
    layer(
        "LayerNorm",
        &[arg("eps", ArgKind::Float, false)],
        "`LayerNorm` or `LayerNorm(eps = 1e-5)`",
        check_layer_norm,
    ),
    layer(
        "MultiHeadAttention",
        &[
            arg("heads", ArgKind::Int, true),
            arg("causal", ArgKind::Bool, false),
            arg("memory", ArgKind::Node, false),
            arg("key_padding", ArgKind::Node, false),
        ],
        "`MultiHeadAttention(heads = 4)`, `MultiHeadAttention(heads = 4, causal = true)` or `MultiHeadAttention(heads = 4, memory = encoded, key_padding = padding)`",
        check_attention,
    ),
];

/// Rule: attention and positions work on [steps, dim].
pub(super) fn steps_and_dim<'a>(checker: &mut Checker, call: &'a Call) -> Option<&'a Vec<usize>> {
    let input = call.input.as_ref()?;
    if input.len() != 2 {
        checker.push(
            call.span(),
            format!(
                "{}: {} expects [steps, dim] but gets {}",
                call.name,
                call.spec.name,
                dims(input)
            ),
        );
        return None;
    }
    Some(input)
}

struct Embedding {
    vocab: usize,
    dim: usize,
}

fn check_embedding(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let name = &call.name;
    let (vocab, dim) = (call.int(0), call.int(1));
    // Rule: an embedding has at least one token and one dimension.
    if vocab == 0 || dim == 0 {
        checker.push(
            call.span(),
            format!("{name}: an embedding needs vocab and dim of at least 1"),
        );
        return None;
    }
    let input = call.input.as_ref()?;
    // Rule: an embedding reads [steps] of token ids.
    if input.len() != 1 {
        checker.push(
            call.span(),
            format!(
                "{name}: Embedding expects [steps] of token ids but gets {}",
                dims(input)
            ),
        );
        return None;
    }
    Some((Box::new(Embedding { vocab, dim }), vec![input[0], dim]))
}

impl Op for Embedding {
    fn params(&self, _: &Layer) -> usize {
        self.vocab * self.dim
    }

    fn flops(&self, _: &Layer) -> u64 {
        0
    }

    fn token_vocab(&self) -> Option<usize> {
        Some(self.vocab)
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let table = plan.param(
            format!("{}.weight", layer.name),
            vec![self.vocab, self.dim],
            InitPlan::Normal(1.0),
            false,
        );
        let output = plan.node(size(&layer.output));
        plan.push(EmbeddingStep {
            input,
            output,
            dim: self.dim,
            table,
        });
        output
    }
}

struct EmbeddingStep {
    input: usize,
    output: usize,
    dim: usize,
    table: Range<usize>,
}

impl Step for EmbeddingStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn param_ranges(&self) -> Vec<Range<usize>> {
        vec![self.table.clone()]
    }

    fn onnx(&self, shapes: &StepShapes) -> Option<Vec<TokenStream>> {
        // The ids arrive as floats, as kiln takes them.
        let out = self.output;
        Some(vec![
            reshape_input(self.input, out, shapes.input),
            node("Cast", &[temp(out, 0)], temp(out, 1), &[attr_int("to", 7)]),
            node(
                "Gather",
                &[param(self.table.start), temp(out, 1)],
                value_node(out),
                &[attr_int("axis", 0)],
            ),
        ])
    }

    fn forward(&self) -> TokenStream {
        let EmbeddingStep {
            input, output, dim, ..
        } = self;
        let table = slice(&self.table);
        quote! {
            {
                let io = ws.forward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::embedding_forward::<T>(io.output, io.input, &params[#table], #dim);
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let EmbeddingStep {
            input, output, dim, ..
        } = self;
        // Token ids have no gradient; the write only marks the node as written.
        let _ = flow.accum(*input);
        let table = slice(&self.table);
        quote! {
            {
                let io = ws.backward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::embedding_backward::<T>(&mut grads[#table], io.input, io.grad_output, #dim);
            }
        }
    }
}

struct Positional;

fn check_positional(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let input = steps_and_dim(checker, call)?;
    Some((Box::new(Positional), input.clone()))
}

impl Op for Positional {
    fn params(&self, layer: &Layer) -> usize {
        size(&layer.input)
    }

    fn flops(&self, layer: &Layer) -> u64 {
        size(&layer.output) as u64
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let table = plan.param(
            format!("{}.weight", layer.name),
            layer.input.clone(),
            InitPlan::Normal(0.02),
            false,
        );
        let output = plan.node(size(&layer.output));
        plan.push(PositionalStep {
            input,
            output,
            table,
        });
        output
    }
}

struct PositionalStep {
    input: usize,
    output: usize,
    table: Range<usize>,
}

impl Step for PositionalStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn param_ranges(&self) -> Vec<Range<usize>> {
        vec![self.table.clone()]
    }

    fn onnx(&self, shapes: &StepShapes) -> Option<Vec<TokenStream>> {
        let out = self.output;
        Some(vec![
            reshape_input(self.input, out, shapes.input),
            node(
                "Add",
                &[temp(out, 0), param(self.table.start)],
                value_node(out),
                &[],
            ),
        ])
    }

    fn forward(&self) -> TokenStream {
        let PositionalStep { input, output, .. } = self;
        let table = slice(&self.table);
        quote! {
            {
                let io = ws.forward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::positional_forward::<T>(io.output, io.input, &params[#table]);
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let PositionalStep { input, output, .. } = self;
        let grad_input = flow.optional(*input, quote!(io.grad_input));
        let table = slice(&self.table);
        quote! {
            {
                let io = ws.backward_io(#input, #output, ::core::option::Option::None);
                ::kiln::__private::layers::positional_backward::<T>(#grad_input, &mut grads[#table], io.grad_output);
            }
        }
    }
}

struct LayerNorm {
    eps: f64,
}

fn check_layer_norm(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let eps = call.float(0, 1e-5);
    if eps.is_nan() || eps <= 0.0 {
        checker.push(
            call.arg_span(0),
            format!("{}: eps must be positive, got {eps:?}", call.name),
        );
        return None;
    }
    let input = call.input.clone()?;
    Some((Box::new(LayerNorm { eps }), input))
}

impl Op for LayerNorm {
    fn params(&self, layer: &Layer) -> usize {
        2 * layer.input.last().expect("rank >= 1")
    }

    fn flops(&self, layer: &Layer) -> u64 {
        5 * size(&layer.output) as u64
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let name = &layer.name;
        let width = *layer.input.last().expect("rank >= 1");
        let gamma = plan.param(format!("{name}.weight"), vec![width], InitPlan::Ones, false);
        let beta = plan.param(format!("{name}.bias"), vec![width], InitPlan::Zeros, false);
        let output = plan.node(size(&layer.output));
        let saved = plan.node(2 * size(&layer.output) / width);
        plan.push(LayerNormStep {
            input,
            output,
            saved,
            width,
            eps: self.eps,
            gamma,
            beta,
        });
        output
    }
}

struct LayerNormStep {
    input: usize,
    output: usize,
    saved: usize,
    width: usize,
    eps: f64,
    gamma: Range<usize>,
    beta: Range<usize>,
}

impl Step for LayerNormStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn param_ranges(&self) -> Vec<Range<usize>> {
        vec![self.gamma.clone(), self.beta.clone()]
    }

    fn onnx(&self, _: &StepShapes) -> Option<Vec<TokenStream>> {
        let out = self.output;
        let inputs = [
            temp(out, 0),
            param(self.gamma.start),
            param(self.beta.start),
        ];
        let attrs = [attr_int("axis", -1), attr_float("epsilon", self.eps)];
        Some(vec![
            reshape_input(self.input, out, &[self.width]),
            node("LayerNormalization", &inputs, value_node(out), &attrs),
        ])
    }

    fn forward(&self) -> TokenStream {
        let LayerNormStep {
            input,
            output,
            saved,
            width,
            ..
        } = self;
        let (gamma, beta, eps) = (
            slice(&self.gamma),
            slice(&self.beta),
            Literal::f64_suffixed(self.eps),
        );
        quote! {
            {
                let io = ws.forward_io(#input, #output, ::core::option::Option::Some(#saved));
                ::kiln::__private::layers::layer_norm_forward::<T>(io.output, io.aux, io.input, &params[#gamma], &params[#beta], #width, #eps);
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let LayerNormStep {
            input,
            output,
            saved,
            width,
            ..
        } = self;
        let grad_input = flow.optional(*input, quote!(io.grad_input));
        let both = slice(&(self.gamma.start..self.beta.end));
        let gamma = slice(&self.gamma);
        quote! {
            {
                let io = ws.backward_io(#input, #output, ::core::option::Option::Some(#saved));
                let (grad_gamma, grad_beta) = grads[#both].split_at_mut(#width);
                ::kiln::__private::layers::layer_norm_backward::<T>(
                    #grad_input, grad_gamma, grad_beta, io.aux, io.input, &params[#gamma],
                    io.grad_output, #width,
                );
            }
        }
    }
}

struct Attention {
    heads: usize,
    causal: bool,
    /// The node the keys and values come from (its name), and its steps.
    memory: Option<String>,
    keys: usize,
    key_padding: Option<String>,
}

fn check_attention(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let name = &call.name;
    let heads = call.int(0);
    let causal = call.flag(1, false);
    // Read (and so mark) the named nodes whatever else is wrong.
    let memory = checker.node_shape(call, 2);
    let padding = checker.node_shape(call, 3);
    if heads == 0 {
        checker.push(
            call.arg_span(0),
            format!("{name}: attention needs at least 1 head"),
        );
        return None;
    }
    let memory_name = call.node(2);
    // Rule: the causal mask orders a sequence against itself.
    if let (true, Some(memory)) = (causal, &memory_name) {
        checker.push(
            call.arg_span(1),
            format!(
                "{name}: `causal = true` hides a sequence's later steps from itself; cross-attention to `{memory}` takes no causal mask"
            ),
        );
        return None;
    }
    let (memory, padding) = (memory.ok()?, padding.ok()?);
    let input = steps_and_dim(checker, call)?;
    // Rule: steps, keys and width are at most MAX_ARG (their products size the
    // attention weights and count its FLOPs).
    let keys_of = memory.as_ref().map_or(input[0], |m| m[0]);
    if input
        .iter()
        .chain([&keys_of])
        .any(|&n| n > crate::check::MAX_ARG)
    {
        checker.push(
            call.span(),
            format!(
                "{name}: attention over {} is larger than kiln takes (at most {} steps, keys or dims)",
                dims(input),
                crate::check::MAX_ARG
            ),
        );
        return None;
    }
    // Rule: the heads divide the model dimension.
    if input[1] % heads != 0 {
        checker.push(
            call.arg_span(0),
            format!("{name}: dim {} is not divisible by {heads} heads", input[1]),
        );
        return None;
    }
    let keys = match (&memory_name, memory) {
        (None, _) => input[0],
        (Some(_), None) => return None,
        (Some(m), Some(shape)) => {
            // Rule: the memory is a sequence as wide as the queries.
            if shape.len() != 2 || shape[1] != input[1] {
                checker.push(
                    call.arg_span(2),
                    format!(
                        "{name}: the memory `{m}` is {} but the queries are {}: cross-attention's keys and queries need the same width, [keys, {}]",
                        dims(&shape),
                        dims(input),
                        input[1]
                    ),
                );
                return None;
            }
            shape[0]
        }
    };
    let padding_name = call.node(3);
    if let (Some(p), Some(shape)) = (&padding_name, padding) {
        // Rule: the key padding has one value per key.
        if shape != [keys] {
            let whose = match &memory_name {
                Some(m) => format!("the memory `{m}`"),
                None => "the input".to_string(),
            };
            checker.push(
                call.arg_span(3),
                format!(
                    "{name}: the key padding `{p}` is {} but {whose} has {keys} steps: it needs [{keys}], one value per key (1: padded, 0: seen)",
                    dims(&shape)
                ),
            );
            return None;
        }
    }
    let op = Attention {
        heads,
        causal,
        memory: memory_name.map(|m| m.to_string()),
        keys,
        key_padding: padding_name.map(|p| p.to_string()),
    };
    Some((Box::new(op), input.clone()))
}

impl Attention {
    /// The geometry the runtime's kernels take.
    fn shape(&self, layer: &Layer) -> kiln_shapes::AttentionShape {
        kiln_shapes::AttentionShape {
            steps: layer.input[0],
            keys: self.keys,
            dim: layer.input[1],
            heads: self.heads,
            causal: self.causal,
        }
    }
}

impl Op for Attention {
    fn params(&self, layer: &Layer) -> usize {
        self.shape(layer).params_len()
    }

    fn flops(&self, layer: &Layer) -> u64 {
        // Projections, scores and weighted sums, then three per softmax weight.
        let shape = self.shape(layer);
        shape.flops() as u64 + (3 * shape.heads * shape.steps * shape.keys) as u64
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let name = &layer.name;
        let (steps, dim, heads) = (layer.input[0], layer.input[1], self.heads);
        let in_weight = plan.param(
            format!("{name}.in_proj_weight"),
            vec![3 * dim, dim],
            InitPlan::Xavier(dim, 3 * dim),
            true,
        );
        let in_bias = plan.param(
            format!("{name}.in_proj_bias"),
            vec![3 * dim],
            InitPlan::Zeros,
            false,
        );
        let out_weight = plan.param(
            format!("{name}.out_proj.weight"),
            vec![dim, dim],
            InitPlan::FanIn(dim),
            true,
        );
        let out_bias = plan.param(
            format!("{name}.out_proj.bias"),
            vec![dim],
            InitPlan::Zeros,
            false,
        );
        let output = plan.node(size(&layer.output));
        let node = |name: &Option<String>| {
            name.as_ref().map(|n| {
                *plan
                    .named_nodes
                    .get(n)
                    .expect("checked: a node defined before")
            })
        };
        // Attending to its own input is self-attention.
        let memory = node(&self.memory).filter(|&m| m != input);
        let key_padding = node(&self.key_padding);
        let shape = self.shape(layer);
        let aux = plan.node(shape.aux_len());
        let partial = plan.fixed(shape.params_len());
        plan.push(AttentionStep {
            input,
            memory,
            key_padding,
            output,
            aux,
            steps,
            keys: self.keys,
            dim,
            heads,
            causal: self.causal,
            partial,
            in_weight,
            in_bias,
            out_weight,
            out_bias,
        });
        output
    }
}

struct AttentionStep {
    input: usize,
    memory: Option<usize>,
    key_padding: Option<usize>,
    output: usize,
    aux: usize,
    steps: usize,
    keys: usize,
    dim: usize,
    heads: usize,
    causal: bool,
    /// Fixed scratch for the parameter gradients of half a split batch.
    partial: Range<usize>,
    in_weight: Range<usize>,
    in_bias: Range<usize>,
    out_weight: Range<usize>,
    out_bias: Range<usize>,
}

impl AttentionStep {
    fn shape(&self) -> TokenStream {
        let (steps, keys, dim, heads, causal) =
            (self.steps, self.keys, self.dim, self.heads, self.causal);
        quote! {
            &::kiln::__private::layers::AttentionShape {
                steps: #steps,
                keys: #keys,
                dim: #dim,
                heads: #heads,
                causal: #causal,
            }
        }
    }

    /// The `AttentionNodes` the step reads.
    fn nodes(&self) -> TokenStream {
        let option = |node: Option<usize>| match node {
            Some(n) => quote!(::core::option::Option::Some(#n)),
            None => quote!(::core::option::Option::None),
        };
        let (input, memory, padding) = (self.input, option(self.memory), option(self.key_padding));
        quote! {
            ::kiln::__private::AttentionNodes { query: #input, memory: #memory, key_padding: #padding }
        }
    }
}

impl Step for AttentionStep {
    fn inputs(&self) -> Vec<usize> {
        let mut inputs = vec![self.input];
        inputs.extend(self.memory);
        inputs.extend(self.key_padding);
        inputs
    }

    fn output(&self) -> usize {
        self.output
    }

    fn param_ranges(&self) -> Vec<Range<usize>> {
        vec![
            self.in_weight.clone(),
            self.in_bias.clone(),
            self.out_weight.clone(),
            self.out_bias.clone(),
        ]
    }

    fn onnx(&self, _: &StepShapes) -> Option<Vec<TokenStream>> {
        let (out, t, kk, d, h) = (
            self.output,
            self.steps as i64,
            self.keys as i64,
            self.dim as i64,
            self.heads as i64,
        );
        let dh = d / h;
        let mut nodes = vec![reshape_input(self.input, out, &[self.steps, self.dim])];
        let mut next = 0u8;
        let mut fresh = || {
            next += 1;
            temp(out, next)
        };
        let mut op = |nodes: &mut Vec<TokenStream>,
                      op: &str,
                      inputs: &[TokenStream],
                      attrs: &[TokenStream]| {
            let to = fresh();
            nodes.push(node(op, inputs, to.clone(), attrs));
            to
        };
        // `x Wᵀ + b`, PyTorch's packed projections: the queries from the input, the
        // keys and values from the memory (the input itself in self-attention).
        let w_in = op(
            &mut nodes,
            "Transpose",
            &[param(self.in_weight.start)],
            &[attr_ints("perm", &[1, 0])],
        );
        let qkv = op(&mut nodes, "MatMul", &[temp(out, 0), w_in.clone()], &[]);
        let qkv = op(&mut nodes, "Add", &[qkv, param(self.in_bias.start)], &[]);
        let kv = match self.memory {
            Some(memory) => {
                let m = op(
                    &mut nodes,
                    "Reshape",
                    &[value_node(memory), ints(&[-1, kk, d])],
                    &[],
                );
                let kv = op(&mut nodes, "MatMul", &[m, w_in], &[]);
                op(&mut nodes, "Add", &[kv, param(self.in_bias.start)], &[])
            }
            None => qkv.clone(),
        };
        // q, k, v: [batch, heads, steps, head_dim] (k transposed to [.., head_dim, keys]).
        let mut heads = Vec::new();
        for (which, perm) in [(0, [0, 2, 1, 3]), (1, [0, 2, 3, 1]), (2, [0, 2, 1, 3])] {
            let (from, len) = if which == 0 { (&qkv, t) } else { (&kv, kk) };
            let slice = [
                from.clone(),
                ints(&[which * d]),
                ints(&[(which + 1) * d]),
                ints(&[2]),
            ];
            let part = op(&mut nodes, "Slice", &slice, &[]);
            let split = op(&mut nodes, "Reshape", &[part, ints(&[-1, len, h, dh])], &[]);
            heads.push(op(
                &mut nodes,
                "Transpose",
                &[split],
                &[attr_ints("perm", &perm)],
            ));
        }
        let (q, k, v) = (heads[0].clone(), heads[1].clone(), heads[2].clone());
        let scores = op(&mut nodes, "MatMul", &[q, k], &[]);
        let mut scores = op(
            &mut nodes,
            "Mul",
            &[scores, scalar(1.0 / (dh as f64).sqrt())],
            &[],
        );
        if self.causal {
            // −1e9 above the diagonal: a later step's weight is exp(−1e9) = 0.
            let ones = op(&mut nodes, "Expand", &[scalar(1.0), ints(&[t, t])], &[]);
            let future = op(
                &mut nodes,
                "Trilu",
                &[ones, ints(&[1])],
                &[attr_int("upper", 1)],
            );
            let mask = op(&mut nodes, "Mul", &[future, scalar(-1e9)], &[]);
            scores = op(&mut nodes, "Add", &[scores, mask], &[]);
        }
        if let Some(padding) = self.key_padding {
            // −1e9 on each padded key (marked 1, or above ½ as kiln reads it), for every
            // head and query. A query that sees no key gets uniform weights here, where
            // kiln gives zero ones.
            let marked = op(
                &mut nodes,
                "Greater",
                &[value_node(padding), scalar(0.5)],
                &[],
            );
            let marked = op(&mut nodes, "Cast", &[marked], &[attr_int("to", 1)]);
            let marked = op(&mut nodes, "Reshape", &[marked, ints(&[-1, 1, 1, kk])], &[]);
            let mask = op(&mut nodes, "Mul", &[marked, scalar(-1e9)], &[]);
            scores = op(&mut nodes, "Add", &[scores, mask], &[]);
        }
        let weights = op(&mut nodes, "Softmax", &[scores], &[attr_int("axis", -1)]);
        let mixed = op(&mut nodes, "MatMul", &[weights, v], &[]);
        let mixed = op(
            &mut nodes,
            "Transpose",
            &[mixed],
            &[attr_ints("perm", &[0, 2, 1, 3])],
        );
        let mixed = op(&mut nodes, "Reshape", &[mixed, ints(&[-1, t, d])], &[]);
        let w_out = op(
            &mut nodes,
            "Transpose",
            &[param(self.out_weight.start)],
            &[attr_ints("perm", &[1, 0])],
        );
        let projected = op(&mut nodes, "MatMul", &[mixed, w_out], &[]);
        nodes.push(node(
            "Add",
            &[projected, param(self.out_bias.start)],
            value_node(out),
            &[],
        ));
        Some(nodes)
    }

    fn forward(&self) -> TokenStream {
        let AttentionStep { output, aux, .. } = self;
        let (shape, nodes) = (self.shape(), self.nodes());
        let (wi, bi, wo, bo) = (
            slice(&self.in_weight),
            slice(&self.in_bias),
            slice(&self.out_weight),
            slice(&self.out_bias),
        );
        quote! {
            {
                let io = ws.attention_io(#nodes, #output, #aux);
                ::kiln::__private::layers::attention_forward::<T>(
                    #shape, io.output, io.aux, io.inputs, &params[#wi], &params[#bi],
                    &params[#wo], &params[#bo], batch,
                );
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let AttentionStep { output, aux, .. } = self;
        let (shape, nodes) = (self.shape(), self.nodes());
        let none = quote!(::core::option::Option::None);
        let grad_input = flow.optional(self.input, quote!(io.grad_query));
        let grad_memory = match self.memory {
            Some(m) => flow.optional(m, quote!(io.grad_memory)),
            None => none.clone(),
        };
        // The padding is data: its gradient is zero.
        let zero_padding = match self.key_padding {
            Some(p) => {
                let grad = flow.optional(p, quote!(io.grad_key_padding));
                quote! {
                    let padding_grad: ::core::option::Option<(&mut [T], ::kiln::__private::layers::Accum)> = #grad;
                    if let ::core::option::Option::Some((grad, accum)) = padding_grad {
                        if ::core::matches!(accum, ::kiln::__private::layers::Accum::Replace) {
                            grad.fill(T::ZERO);
                        }
                    }
                }
            }
            None => quote!(),
        };
        let all = slice(&(self.in_weight.start..self.out_bias.end));
        let (len_wi, len_bi, len_wo) = (
            self.in_weight.len(),
            self.in_bias.len(),
            self.out_weight.len(),
        );
        let (wi, wo) = (slice(&self.in_weight), slice(&self.out_weight));
        let partial = slice(&self.partial);
        quote! {
            {
                let io = ws.attention_grad_io(#nodes, #output, #aux);
                #zero_padding
                let (grad_in_weight, rest) = grads[#all].split_at_mut(#len_wi);
                let (grad_in_bias, rest) = rest.split_at_mut(#len_bi);
                let (grad_out_weight, grad_out_bias) = rest.split_at_mut(#len_wo);
                let attention_grads = ::kiln::__private::layers::AttentionGrads {
                    input: #grad_input,
                    memory: #grad_memory,
                    in_weight: grad_in_weight,
                    in_bias: grad_in_bias,
                    out_weight: grad_out_weight,
                    out_bias: grad_out_bias,
                    partial: &mut io.fixed[#partial],
                };
                ::kiln::__private::layers::attention_backward::<T>(
                    #shape, attention_grads, io.aux, io.inputs, &params[#wi], &params[#wo],
                    io.grad_output, batch,
                );
            }
        }
    }
}
