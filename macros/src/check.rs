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

/// What a layer computes.
pub enum Op {
    Dense { units: usize, bias: bool },
    Activation(Act),
    Softmax,
    LogSoftmax,
    Flatten,
    Dropout(f64),
    Residual(Vec<Layer>),
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
            Value::Bool(_) => f64::NAN,
        }
    }
    fn bool(&self) -> bool {
        matches!(self, Value::Bool(true))
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
            (Lit::Int(i), ArgKind::Int) => i.base10_parse::<usize>().ok().map(Value::Int),
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
        _ => None,
    }
}

/// PyTorch and Keras names that users reach for, mapped to ours.
const ALIASES: &[(&str, &str)] = &[
    ("Linear", "Dense"),
    ("ReLU", "Relu"),
    ("LeakyReLU", "LeakyRelu"),
    ("GELU", "Gelu"),
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
