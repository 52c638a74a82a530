//! PyTorch's transformer layers, built from kiln's own: `TransformerEncoderLayer` and
//! `TransformerDecoderLayer` (`nn.TransformerEncoderLayer`, `nn.TransformerDecoderLayer`,
//! `batch_first=True`), over `[steps, dim]`.
//!
//! A use is checked as the sequence of layers it stands for, named as PyTorch names the
//! module's parameters (`dec.self_attn.in_proj_weight`, `dec.multihead_attn.*`,
//! `dec.linear1.*`, `dec.norm3.*`), so a state dict loads unchanged. Post-norm as
//! PyTorch's default, for the decoder:
//!
//! ```text
//! x = norm1(x + dropout1(self_attn(x)))              causal unless `causal = false`
//! x = norm2(x + dropout2(multihead_attn(x, memory)))
//! x = norm3(x + dropout3(linear2(dropout(act(linear1(x))))))
//! ```
//!
//! and with `norm_first = true` each sublayer reads its norm (`x = x + sa(norm1(x))`).
//! The encoder has the first and last of these (its feed-forward norm is `norm2`).
//! Every gradient comes from the layers they are made of.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::Token;

use super::attention::steps_and_dim;
use super::{arg, layer, sequential, ArgKind, Call, Checked};
use crate::check::Checker;
use crate::parse::Item;

const ACTIVATIONS: &[&str] = &["relu", "gelu"];

pub const SPECS: &[super::LayerSpec] = &[
    layer(
        "TransformerEncoderLayer",
        &[
            arg("heads", ArgKind::Int, true),
            arg("ff", ArgKind::Int, true),
            arg("dropout", ArgKind::Float, false),
            arg("activation", ArgKind::Choice(ACTIVATIONS), false),
            arg("norm_first", ArgKind::Bool, false),
            arg("eps", ArgKind::Float, false),
            arg("key_padding", ArgKind::Node, false),
        ],
        "`TransformerEncoderLayer(heads = 4, ff = 256)` or `TransformerEncoderLayer(heads = 4, ff = 256, dropout = 0.0, key_padding = padding)`",
        check_encoder,
    ),
    layer(
        "TransformerDecoderLayer",
        &[
            arg("heads", ArgKind::Int, true),
            arg("ff", ArgKind::Int, true),
            arg("memory", ArgKind::Node, true),
            arg("dropout", ArgKind::Float, false),
            arg("activation", ArgKind::Choice(ACTIVATIONS), false),
            arg("norm_first", ArgKind::Bool, false),
            arg("eps", ArgKind::Float, false),
            arg("causal", ArgKind::Bool, false),
            arg("key_padding", ArgKind::Node, false),
            arg("memory_padding", ArgKind::Node, false),
        ],
        "`TransformerDecoderLayer(heads = 4, ff = 256, memory = encoded)` or `TransformerDecoderLayer(heads = 4, ff = 256, memory = encoded, memory_padding = padding)`",
        check_decoder,
    ),
];

/// What both layers share, read from the call: `(heads, ff, dropout, activation,
/// norm_first, eps)` at the given argument positions.
/// Each value is a literal spanned where the use wrote it (or at the use), so that
/// the layers it stands for report a bad value there.
struct Common {
    heads: Literal,
    ff: Literal,
    dropout: Option<Literal>,
    activation: TokenStream,
    norm_first: bool,
    eps: Literal,
}

/// Rules: the dropout probability is in `[0, 1)` and `eps` is positive. (Checked
/// here: the layers built from them take them as literals.)
fn common(checker: &mut Checker, call: &Call, dropout: usize) -> Option<Common> {
    let name = &call.name;
    let (p, eps) = (call.float(dropout, 0.1), call.float(dropout + 3, 1e-5));
    let mut ok = true;
    if !(0.0..1.0).contains(&p) {
        checker.push(
            call.arg_span(dropout),
            format!("{name}: dropout must be in [0, 1), got {p}"),
        );
        ok = false;
    }
    if eps.is_nan() || eps <= 0.0 {
        checker.push(
            call.arg_span(dropout + 3),
            format!("{name}: eps must be positive, got {eps:?}"),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    let spanned = |mut literal: Literal, index: usize| {
        literal.set_span(call.arg_span(index));
        literal
    };
    let activation = match call.choice(dropout + 1) {
        0 => quote_spanned!(call.arg_span(dropout + 1)=> Relu),
        _ => quote_spanned!(call.arg_span(dropout + 1)=> Gelu),
    };
    Some(Common {
        heads: spanned(Literal::usize_unsuffixed(call.int(0)), 0),
        ff: spanned(Literal::usize_unsuffixed(call.int(1)), 1),
        dropout: (p != 0.0).then(|| spanned(Literal::f64_unsuffixed(p), dropout)),
        activation,
        norm_first: call.flag(dropout + 2, false),
        eps: spanned(Literal::f64_unsuffixed(eps), dropout + 3),
    })
}

/// `key = name` for a node argument that is written, else nothing.
fn node_arg(call: &Call, index: usize, key: &str) -> TokenStream {
    match call.node(index) {
        Some(ident) => {
            let key = syn::Ident::new(key, ident.span());
            quote!(, #key = #ident)
        }
        None => quote!(),
    }
}

/// One sublayer with its residual connection and norm: `x = norm(x + dropout(f(x)))`,
/// or `x = x + dropout(f(norm(x)))` with the norm first.
fn sublayer(
    c: &Common,
    norm: &str,
    body: TokenStream,
    dropout: &str,
    span: proc_macro2::Span,
) -> TokenStream {
    let norm = syn::Ident::new(norm, span);
    let eps = &c.eps;
    let dropout = syn::Ident::new(dropout, span);
    let drop = c
        .dropout
        .as_ref()
        .map(|p| quote_spanned!(span=> , #dropout: Dropout(#p)));
    if c.norm_first {
        quote_spanned!(span=> Residual { #norm: LayerNorm(eps = #eps), #body #drop },)
    } else {
        quote_spanned!(span=> Residual { #body #drop }, #norm: LayerNorm(eps = #eps),)
    }
}

/// The feed-forward sublayer's body: `linear1, act, dropout, linear2`.
fn feed_forward(c: &Common, dim: usize, span: proc_macro2::Span) -> TokenStream {
    let (ff, act) = (&c.ff, &c.activation);
    let dim = Literal::usize_unsuffixed(dim);
    let drop = c
        .dropout
        .as_ref()
        .map(|p| quote_spanned!(span=> dropout: Dropout(#p),));
    quote_spanned!(span=> linear1: Dense(#ff), #act, #drop linear2: Dense(#dim))
}

/// Rule: a transformer layer reads `[steps, dim]`. Checks the layers a use stands for,
/// named under its own name.
fn check_built(checker: &mut Checker, call: &Call, tokens: TokenStream) -> Option<Checked> {
    let items = match Punctuated::<Item, Token![,]>::parse_terminated.parse2(tokens) {
        Ok(items) => items.into_iter().collect::<Vec<_>>(),
        Err(error) => {
            checker.push(call.span(), format!("{}: {error}", call.name));
            return None;
        }
    };
    let mut inner = Vec::new();
    let output = checker.nested(&call.name, |checker| {
        checker.items(&items, call.input.clone(), &mut inner)
    })?;
    Some((sequential::sequence(inner), output))
}

fn check_encoder(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let c = common(checker, call, 2);
    let dim = steps_and_dim(checker, call)?[1];
    let c = c?;
    let span = call.span();
    let heads = &c.heads;
    let padding = node_arg(call, 6, "key_padding");
    let attention = quote_spanned!(span=> self_attn: MultiHeadAttention(heads = #heads #padding));
    let first = sublayer(&c, "norm1", attention, "dropout1", span);
    let second = sublayer(&c, "norm2", feed_forward(&c, dim, span), "dropout2", span);
    check_built(checker, call, quote!(#first #second))
}

fn check_decoder(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let c = common(checker, call, 3);
    let dim = steps_and_dim(checker, call)?[1];
    let c = c?;
    let span = call.span();
    let heads = &c.heads;
    let causal = call.flag(7, true);
    let padding = node_arg(call, 8, "key_padding");
    let memory = node_arg(call, 2, "memory");
    let memory_padding = node_arg(call, 9, "key_padding");
    let self_attention = quote_spanned!(span=>
        self_attn: MultiHeadAttention(heads = #heads, causal = #causal #padding)
    );
    let cross_attention = quote_spanned!(span=>
        multihead_attn: MultiHeadAttention(heads = #heads #memory #memory_padding)
    );
    let first = sublayer(&c, "norm1", self_attention, "dropout1", span);
    let second = sublayer(&c, "norm2", cross_attention, "dropout2", span);
    let third = sublayer(&c, "norm3", feed_forward(&c, dim, span), "dropout3", span);
    check_built(checker, call, quote!(#first #second #third))
}
