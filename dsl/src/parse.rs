//! DSL tokens to a typed tree that keeps the user's spans.
//!
//! ```text
//! model      := block-def* outer-attr* visibility "struct" IDENT "{" body "}"
//! block-def  := outer-attr* "block" IDENT params? block
//! params     := "(" (IDENT ("=" EXPR)? ("," IDENT ("=" EXPR)?)* ","?)? ")"
//! body       := "input" ":" "[" dim ("," dim)* ","? "]" ("," item)* ","?
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
        })
    }
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
