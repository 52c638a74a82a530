//! DSL tokens to a typed tree that keeps the user's spans.
//!
//! ```text
//! model      := block-def* outer-attr* visibility "struct" IDENT "{" body "}"
//! block-def  := outer-attr* "block" IDENT params? block
//! params     := "(" (IDENT ("=" EXPR)? ("," IDENT ("=" EXPR)?)* ","?)? ")"
//! body       := "input" ":" "[" dim ("," dim)* ","? "]" ("," item)* ","?
//!             | graph
//! graph      := "inputs" ":" "{" IDENT ":" dims ("," IDENT ":" dims)* ","? "}"
//!               ("," node)* "," "outputs" ":" "{" output ("," output)* ","? "}" ","?
//! node       := IDENT ":" source (">>" layers)?
//! output     := IDENT (":" source (">>" layers)?)?   (bare: the node of that name)
//! source     := IDENT | IDENT "(" IDENT ("," IDENT)* ","? ")"   (`Concat(a, b)`)
//! layers     := item | block                      (one layer, or a sequence in braces)
//! dim        := INTEGER
//! item       := (IDENT ":")? IDENT args? block?
//!             | IDENT ":" block                       (a branch: `b1: { .. }`)
//!             | (IDENT ":")? "use" TYPE-PATH ("->" "[" dim ("," dim)* ","? "]")?
//!                                                     (a user layer: `gate: use Gate<8>`)
//! args       := "(" (arg ("," arg)* ","?)? ")"
//! arg        := (IDENT "=")? EXPR
//! block      := "{" (item ("," item)* ","?)? "}"       (for `Residual`, `Concat`, ..)
//! ```
//!
//! A branch `name: { .. }` is shorthand for `name: Sequential { .. }`. A block
//! definition (`block Basic(channels, stride = 1) { .. }`) is a layer list used by its
//! name in the model (`layer1: Basic(64)`); [`blocks`](crate::blocks) expands each use.
//!
//! Only the grammar is checked here; which layers exist, their arguments and the
//! shapes they produce are [`check`](crate::check)'s business.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{braced, bracketed, parenthesized, Attribute, Expr, Ident, LitInt, Token, Visibility};

/// Keywords of the DSL.
pub mod kw {
    syn::custom_keyword!(input);
    syn::custom_keyword!(block);
    syn::custom_keyword!(inputs);
    syn::custom_keyword!(outputs);
}

/// A whole `model!` invocation.
pub struct ModelDef {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub input: InputDecl,
    pub items: Vec<Item>,
    /// The blocks defined before the struct.
    pub blocks: Vec<BlockDef>,
    /// For a model written as a graph (`inputs: { .. }`, nodes, `outputs: { .. }`):
    /// the graph; `input` is then its packed input (the one input's shape, or the sum
    /// of the inputs' sizes) and `items` is empty.
    pub graph: Option<Graph>,
}

/// A model with named inputs, nodes and outputs.
pub struct Graph {
    /// The `inputs` keyword.
    pub inputs_span: Span,
    pub inputs: Vec<(Ident, InputDecl)>,
    pub nodes: Vec<GraphNode>,
    pub outputs: Vec<GraphNode>,
}

/// `name: source >> layers`; an output written bare (`digit`) is the node of that name,
/// with no layers.
pub struct GraphNode {
    pub name: Ident,
    pub source: Source,
    /// The node's layers as one item named after the node: its layer, or a
    /// `Sequential` of the layers in braces.
    pub item: Option<Item>,
}

/// What a node reads.
pub enum Source {
    /// An input or an earlier node.
    Node(Ident),
    /// `Concat(a, b, ..)`, `Add(..)` or `Mul(..)` of inputs and earlier nodes.
    Merge { kind: Ident, nodes: Vec<Ident> },
}

/// `block Name(param, param = default) { .. }`: a layer list used by name.
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Block,
}

/// A block's parameter, with its default if it has one.
pub struct Param {
    pub name: Ident,
    pub default: Option<Expr>,
}

/// `input: [d0, d1, ...]`.
#[derive(Clone)]
pub struct InputDecl {
    pub span: Span,
    pub dims: Vec<Dim>,
}

/// One dimension as written.
#[derive(Clone)]
pub struct Dim {
    pub value: usize,
    pub span: Span,
}

/// One entry of a layer list.
#[derive(Clone)]
pub struct Item {
    /// `fc1` in `fc1: Dense(128)`.
    pub name: Option<Ident>,
    /// `Dense`.
    pub kind: Ident,
    /// The parenthesised arguments, if written.
    pub args: Option<Args>,
    /// The braced layer list of a block (`Residual { .. }`), if written.
    pub block: Option<Block>,
    /// For a use of a defined block, expanded into a sequence of its layers: the use as
    /// written (`Basic(64)`), which summaries show.
    pub expanded: Option<String>,
    /// For a user layer (`use Gate<8> -> [8]`): its type and stated output shape.
    pub custom: Option<Custom>,
}

/// `use Type -> [dims]`: a layer that implements `kiln::Layer`.
#[derive(Clone)]
pub struct Custom {
    pub ty: syn::TypePath,
    /// The output shape the use states, if it does (else the input's).
    pub output: Option<Vec<Dim>>,
}

impl Item {
    /// The span that best points at this layer: its name if it has one, else its kind.
    pub fn span(&self) -> Span {
        self.name.as_ref().map_or(self.kind.span(), Ident::span)
    }
}

/// `( ... )` after a layer.
#[derive(Clone)]
pub struct Args {
    pub span: Span,
    pub list: Vec<Arg>,
}

/// `value` or `key = value`.
#[derive(Clone)]
pub struct Arg {
    pub key: Option<Ident>,
    pub value: Expr,
}

/// `{ ... }` after a block layer.
#[derive(Clone)]
pub struct Block {
    pub span: Span,
    pub items: Vec<Item>,
}

impl Parse for ModelDef {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut blocks = Vec::new();
        let attrs = loop {
            // Attributes (doc comments) of a block definition document it only.
            let attrs = input.call(Attribute::parse_outer)?;
            if !input.peek(kw::block) {
                break attrs;
            }
            blocks.push(input.parse()?);
        };
        let vis: Visibility = input.parse()?;
        input.parse::<Token![struct]>()?;
        let name: Ident = input.parse()?;
        let body;
        let brace = braced!(body in input);
        if body.is_empty() {
            return Err(syn::Error::new(
                brace.span.join(),
                "a model needs `input: [..]` and at least one layer",
            ));
        }
        if body.peek(kw::inputs) {
            let graph = parse_graph(&body)?;
            if !input.is_empty() {
                return Err(input.error("unexpected tokens after the model's struct"));
            }
            let input_decl = packed_input(&graph);
            return Ok(ModelDef {
                attrs,
                vis,
                name,
                input: input_decl,
                items: Vec::new(),
                blocks,
                graph: Some(graph),
            });
        }
        let input_decl = parse_input(&body)?;
        let mut items = Vec::new();
        while !body.is_empty() {
            body.parse::<Token![,]>()?;
            if body.is_empty() {
                break;
            }
            items.push(body.parse()?);
        }
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the model's struct"));
        }
        Ok(ModelDef {
            attrs,
            vis,
            name,
            input: input_decl,
            items,
            blocks,
            graph: None,
        })
    }
}

/// The packed input of a graph: its one input's shape, or one dimension of the sum of
/// every input's size.
fn packed_input(graph: &Graph) -> InputDecl {
    if let [(_, only)] = &graph.inputs[..] {
        return only.clone();
    }
    let value = graph
        .inputs
        .iter()
        .map(|(_, d)| d.dims.iter().map(|d| d.value).product::<usize>())
        .sum();
    InputDecl {
        span: graph.inputs_span,
        dims: vec![Dim {
            value,
            span: graph.inputs_span,
        }],
    }
}

/// `inputs: { .. }`, the nodes, `outputs: { .. }`.
fn parse_graph(body: ParseStream) -> syn::Result<Graph> {
    let keyword: kw::inputs = body.parse()?;
    body.parse::<Token![:]>()?;
    if !body.peek(syn::token::Brace) {
        return Err(body.error(
            "`inputs` names each input with its shape in braces: `inputs: { image: [1, 28, 28], meta: [4] }`",
        ));
    }
    let content;
    let brace = braced!(content in body);
    let mut inputs = Vec::new();
    while !content.is_empty() {
        let name: Ident = content.parse()?;
        content.parse::<Token![:]>()?;
        if !content.peek(syn::token::Bracket) {
            return Err(content.error(format!(
                "input `{name}` needs its per-sample shape in brackets: `{name}: [784]`"
            )));
        }
        let (bracket, dims) = parse_dims(&content)?;
        let span = name.span().join(bracket.span.join()).unwrap_or(name.span());
        inputs.push((name, InputDecl { span, dims }));
        if content.is_empty() {
            break;
        }
        content.parse::<Token![,]>()?;
    }
    if inputs.is_empty() {
        return Err(syn::Error::new(
            brace.span.join(),
            "`inputs` names at least one input: `inputs: { image: [1, 28, 28] }`",
        ));
    }
    let mut nodes = Vec::new();
    loop {
        if body.is_empty() {
            return Err(body.error(
                "a model with `inputs` ends with its outputs: `outputs: { digit: trunk >> Dense(10) }`",
            ));
        }
        body.parse::<Token![,]>()?;
        if body.is_empty() {
            return Err(body.error(
                "a model with `inputs` ends with its outputs: `outputs: { digit: trunk >> Dense(10) }`",
            ));
        }
        if body.peek(kw::outputs) {
            break;
        }
        nodes.push(parse_node(body, false)?);
    }
    body.parse::<kw::outputs>()?;
    body.parse::<Token![:]>()?;
    if !body.peek(syn::token::Brace) {
        return Err(body.error(
            "`outputs` lists the model's outputs in braces: `outputs: { digit: trunk >> Dense(10) }`",
        ));
    }
    let content;
    let brace = braced!(content in body);
    let mut outputs = Vec::new();
    while !content.is_empty() {
        outputs.push(parse_node(&content, true)?);
        if content.is_empty() {
            break;
        }
        content.parse::<Token![,]>()?;
    }
    if outputs.is_empty() {
        return Err(syn::Error::new(
            brace.span.join(),
            "`outputs` names at least one output: `outputs: { digit: trunk >> Dense(10) }`",
        ));
    }
    if body.peek(Token![,]) {
        body.parse::<Token![,]>()?;
    }
    if !body.is_empty() {
        return Err(body.error("`outputs` comes last in a model with `inputs`"));
    }
    Ok(Graph {
        inputs_span: keyword.span,
        inputs,
        nodes,
        outputs,
    })
}

/// `name: source >> layers`, or for an output also a bare `name`.
fn parse_node(input: ParseStream, output: bool) -> syn::Result<GraphNode> {
    let name: Ident = input.parse()?;
    if output && (input.is_empty() || input.peek(Token![,])) {
        return Ok(GraphNode {
            source: Source::Node(name.clone()),
            name,
            item: None,
        });
    }
    if !input.peek(Token![:]) || input.peek(Token![::]) {
        return Err(input.error(format!(
            "expected `:` after `{name}`: a node reads an input or a node, as in `{name}: image >> Dense(64)`"
        )));
    }
    input.parse::<Token![:]>()?;
    let first: Ident = input.parse()?;
    let source = if input.peek(syn::token::Paren) {
        let content;
        parenthesized!(content in input);
        let list: Punctuated<Ident, Token![,]> = Punctuated::parse_terminated(&content)?;
        Source::Merge {
            kind: first,
            nodes: list.into_iter().collect(),
        }
    } else {
        Source::Node(first)
    };
    let item = if input.peek(Token![>>]) {
        input.parse::<Token![>>]>()?;
        if input.peek(syn::token::Brace) {
            let content;
            let brace = braced!(content in input);
            let list: Punctuated<Item, Token![,]> = Punctuated::parse_terminated(&content)?;
            Some(Item {
                name: Some(name.clone()),
                kind: Ident::new("Sequential", brace.span.join()),
                args: None,
                block: Some(Block {
                    span: brace.span.join(),
                    items: list.into_iter().collect(),
                }),
                expanded: None,
                custom: None,
            })
        } else {
            let mut item: Item = input.parse()?;
            if let Some(own) = &item.name {
                return Err(syn::Error::new(
                    own.span(),
                    format!(
                        "a node's layer takes the node's name: write `{name}: .. >> {}(..)`",
                        item.kind
                    ),
                ));
            }
            item.name = Some(name.clone());
            Some(item)
        }
    } else {
        None
    };
    if !input.is_empty() && !input.peek(Token![,]) {
        return Err(input.error("expected `>>` and the node's layers, or `,` before the next node"));
    }
    Ok(GraphNode { name, source, item })
}

impl Parse for BlockDef {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        input.parse::<kw::block>()?;
        let name: Ident = input.parse()?;
        let mut params = Vec::new();
        if input.peek(syn::token::Paren) {
            let content;
            parenthesized!(content in input);
            while !content.is_empty() {
                let name: Ident = content.parse()?;
                let default = if content.peek(Token![=]) {
                    content.parse::<Token![=]>()?;
                    Some(content.parse()?)
                } else {
                    None
                };
                params.push(Param { name, default });
                if content.is_empty() {
                    break;
                }
                content.parse::<Token![,]>()?;
            }
        }
        if !input.peek(syn::token::Brace) {
            return Err(input.error(format!(
                "a block definition lists its layers in braces: `block {name}(..) {{ Conv2d(..), Relu }}`"
            )));
        }
        let content;
        let brace = braced!(content in input);
        let list: Punctuated<Item, Token![,]> = Punctuated::parse_terminated(&content)?;
        Ok(BlockDef {
            name,
            params,
            body: Block {
                span: brace.span.join(),
                items: list.into_iter().collect(),
            },
        })
    }
}

fn parse_input(body: ParseStream) -> syn::Result<InputDecl> {
    if !body.peek(kw::input) {
        return Err(body.error("a model starts with its per-sample input shape: `input: [..]`"));
    }
    let keyword: kw::input = body.parse()?;
    body.parse::<Token![:]>()?;
    let (bracket, dims) = parse_dims(body)?;
    Ok(InputDecl {
        span: keyword
            .span
            .join(bracket.span.join())
            .unwrap_or(keyword.span),
        dims,
    })
}

/// `[d0, d1, ..]` of integer literals.
fn parse_dims(input: ParseStream) -> syn::Result<(syn::token::Bracket, Vec<Dim>)> {
    let content;
    let bracket = bracketed!(content in input);
    let dims: Punctuated<LitInt, Token![,]> = Punctuated::parse_terminated(&content)?;
    let dims = dims
        .iter()
        .map(|lit| {
            Ok(Dim {
                value: lit.base10_parse()?,
                span: lit.span(),
            })
        })
        .collect::<syn::Result<Vec<_>>>()?;
    Ok((bracket, dims))
}

/// `use Type -> [dims]` after an optional name.
fn parse_custom(input: ParseStream, name: Option<Ident>) -> syn::Result<Item> {
    let keyword: Token![use] = input.parse()?;
    if !input.peek(Ident) && !input.peek(Token![::]) && !input.peek(Token![<]) {
        return Err(input.error(
            "`use` takes the type of a layer that implements `kiln::Layer`: `use Gate<8>`",
        ));
    }
    let ty: syn::TypePath = input.parse()?;
    let output = if input.peek(Token![->]) {
        input.parse::<Token![->]>()?;
        if !input.peek(syn::token::Bracket) {
            return Err(input
                .error("`->` states the layer's per-sample output shape in brackets: `-> [32]`"));
        }
        let (bracket, dims) = parse_dims(input)?;
        if dims.is_empty() {
            return Err(syn::Error::new(
                bracket.span.join(),
                "an output shape has at least one dimension",
            ));
        }
        Some(dims)
    } else {
        None
    };
    if !input.is_empty() && !input.peek(Token![,]) {
        return Err(input.error("expected `,` between layers, or `-> [..]` for the output shape"));
    }
    Ok(Item {
        name,
        kind: Ident::new("use", keyword.span),
        args: None,
        block: None,
        expanded: None,
        custom: Some(Custom { ty, output }),
    })
}

impl Parse for Item {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(Token![use]) {
            return parse_custom(input, None);
        }
        let first: Ident = input.parse()?;
        if input.peek(Token![:]) && !input.peek(Token![::]) && input.peek2(Token![use]) {
            input.parse::<Token![:]>()?;
            return parse_custom(input, Some(first));
        }
        let (name, kind) = if input.peek(Token![:]) && !input.peek(Token![::]) {
            input.parse::<Token![:]>()?;
            if input.peek(syn::token::Brace) {
                // `b1: { .. }`: a branch, spelled as the sequence it is.
                (Some(first), Ident::new("Sequential", input.span()))
            } else {
                (Some(first), input.parse::<Ident>()?)
            }
        } else {
            (None, first)
        };
        let args = if input.peek(syn::token::Paren) {
            let content;
            let paren = parenthesized!(content in input);
            let list: Punctuated<Arg, Token![,]> = Punctuated::parse_terminated(&content)?;
            Some(Args {
                span: paren.span.join(),
                list: list.into_iter().collect(),
            })
        } else {
            None
        };
        let block = if input.peek(syn::token::Brace) {
            let content;
            let brace = braced!(content in input);
            let list: Punctuated<Item, Token![,]> = Punctuated::parse_terminated(&content)?;
            Some(Block {
                span: brace.span.join(),
                items: list.into_iter().collect(),
            })
        } else {
            None
        };
        if !input.is_empty() && !input.peek(Token![,]) {
            return Err(input.error("expected `,` between layers"));
        }
        Ok(Item {
            name,
            kind,
            args,
            block,
            expanded: None,
            custom: None,
        })
    }
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key = if input.peek(Ident) && input.peek2(Token![=]) && !input.peek2(Token![==]) {
            let key: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            Some(key)
        } else {
            None
        };
        Ok(Arg {
            key,
            value: input.parse()?,
        })
    }
}
