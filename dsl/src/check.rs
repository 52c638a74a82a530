//! Layer resolution, argument checks and shape inference, with diagnostics.
//!
//! [`check`] walks the parsed layer list once, resolving each layer against the
//! families' tables ([`crate::layers`]), binding its arguments and letting its family
//! compute the output shape. Every mistake becomes a `syn::Error` spanned on the
//! user's token; errors are collected, not returned at the first, and a layer whose
//! input shape is unknown (because an earlier layer was wrong) is not shape-checked,
//! so one mistake gives one message.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Lit, UnOp};

use crate::blocks;
use crate::layers::{self, ArgKind, Call, LayerSpec, Op};
use crate::parse::{Arg, Args, Item, ModelDef};

/// The largest input rank the runtime has shape types for (`Shape1` .. `Shape4`).
pub const MAX_RANK: usize = 4;

/// The most values a sample may hold anywhere in a model (2^32, 16 GiB of f32): far
/// beyond any model that fits in memory, and low enough that no size, offset or count
/// the macro or the runtime computes from a shape can overflow.
pub const MAX_VALUES: usize = 1 << 32;

/// The largest integer argument (2^24, 16,777,216: units, channels, kernels, steps),
/// unless its [`ArgSpec`](crate::layers::ArgSpec) allows more (a vocabulary, up to
/// [`MAX_VALUES`]: the ids of a recommender's users). Products of a few such numbers
/// and of a sample's values fit in 64 bits, so no size, parameter count or FLOP count
/// the macro computes overflows.
pub const MAX_ARG: usize = 1 << 24;

/// The values of a shape, if at most [`MAX_VALUES`].
pub fn bounded_size(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_VALUES)
}

/// The most values one window of a convolution or a pool may cover (its input channels
/// times its kernel's area): 2^28, so that a layer's weights and FLOPs stay within 64
/// bits.
pub const MAX_WINDOW: usize = 1 << 28;

/// A model whose every layer and shape is known to be valid.
pub struct Checked {
    pub input: Vec<usize>,
    pub output: Vec<usize>,
    pub layers: Vec<Layer>,
    /// For a model written as a graph: its named inputs and outputs with their shapes.
    pub ports: Option<Ports>,
}

/// The named inputs and outputs of a graph model, in declaration order.
pub struct Ports {
    pub inputs: Vec<(String, Vec<usize>)>,
    pub outputs: Vec<(String, Vec<usize>)>,
}

/// One resolved layer.
pub struct Layer {
    /// User-given or generated name (`fc1`, `dense_0`, `relu_1`).
    pub name: String,
    /// How the layer reads in a summary (`Dense(128)`).
    pub display: String,
    pub op: Box<dyn Op>,
    pub input: Vec<usize>,
    pub output: Vec<usize>,
}

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

    /// Whether any mistake was reported.
    pub fn any(&self) -> bool {
        self.0.is_some()
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
    let mut checker = Checker::default();
    if let Some(graph) = &def.graph {
        checker.block_names = blocks::names(&def.blocks);
        let checked = crate::graph::check(def, graph, &mut checker);
        return checker
            .errors
            .finish(checked)
            .map(|c| c.expect("no errors means every shape is known"));
    }
    let input = check_input(def, &mut checker.errors);
    if def.items.is_empty() {
        checker.push(
            def.name.span(),
            "the model has no layers; add at least one after `input`",
        );
    }
    let items = blocks::expand(&def.blocks, &def.items, &mut checker.errors);
    checker.block_names = blocks::names(&def.blocks);
    check_tokens_first(&items, true, &mut checker.errors);
    checker
        .names
        .collect_user_names(&items, "", &mut checker.errors);
    let mut layers = Vec::new();
    let output = checker.items(&items, input.clone(), &mut layers);
    if let Some(kind) = renames_only(&items) {
        checker.push(
            def.name.span(),
            format!("the model computes nothing: `{kind}` alone only renames the shape"),
        );
    } else if output.is_some()
        && !layers.is_empty()
        && layers.iter().all(|layer| !layer.op.computes())
    {
        // (Only when every layer checked: a layer in error is not in `layers`.)
        checker.push(
            def.name.span(),
            "the model computes nothing: its layers only pass the input on",
        );
    }
    let checked = match (input, output) {
        (Some(input), Some(output)) => Some(Checked {
            input,
            output,
            layers,
            ports: None,
        }),
        _ => None,
    };
    checker
        .errors
        .finish(checked)
        .map(|c| c.expect("no errors means every shape is known"))
}

/// The kind of a non-empty layer list whose every layer is known and computes
/// nothing (`Flatten` alone), if it is one.
pub fn renames_only(items: &[Item]) -> Option<String> {
    let all = !items.is_empty()
        && items
            .iter()
            .all(|item| layers::find(&item.kind.to_string()).is_some_and(|spec| !spec.computes));
    all.then(|| items[0].kind.to_string())
}

/// Rule: a layer that reads the model's token ids (an embedding) can only be the
/// first layer.
pub(crate) fn check_tokens_first(items: &[Item], top: bool, errors: &mut Errors) {
    for (index, item) in items.iter().enumerate() {
        let kind = item.kind.to_string();
        if layers::find(&kind).is_some_and(|spec| spec.reads_tokens) && !(top && index == 0) {
            errors.push(
                item.span(),
                format!("an `{kind}` reads token ids and must be the model's first layer"),
            );
        }
        if let Some(block) = &item.block {
            check_tokens_first(&block.items, false, errors);
        }
    }
}

/// Rule: the input is 1 to 4 dimensions, none of them zero.
fn check_input(def: &ModelDef, errors: &mut Errors) -> Option<Vec<usize>> {
    check_dims(&def.input, errors)
}

/// [`check_input`]'s rule for one input.
pub fn check_dims(input: &crate::parse::InputDecl, errors: &mut Errors) -> Option<Vec<usize>> {
    let dims = &input.dims;
    let mut ok = true;
    if dims.is_empty() {
        errors.push(
            input.span,
            "the input needs at least one dimension, such as `input: [784]`",
        );
        ok = false;
    }
    if dims.len() > MAX_RANK {
        errors.push(
            input.span,
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
    let shape: Vec<usize> = dims.iter().map(|d| d.value).collect();
    // Rule: a sample holds at most MAX_VALUES values.
    if ok && bounded_size(&shape).is_none() {
        errors.push(
            input.span,
            format!(
                "the input {} holds more values than kiln takes (at most {MAX_VALUES} per sample)",
                self::dims(&shape)
            ),
        );
        ok = false;
    }
    ok.then_some(shape)
}

/// Layer names: the user's (unique) and generated ones that avoid them.
#[derive(Default)]
pub(crate) struct Names {
    taken: HashMap<String, Span>,
    counters: HashMap<String, usize>,
}

impl Names {
    /// Rule: a layer name is used once in its scope: the model, or a block that nests
    /// names (`mixed.b1.conv`); `Residual` blocks share their parent's.
    pub(crate) fn collect_user_names(&mut self, items: &[Item], prefix: &str, errors: &mut Errors) {
        for (position, item) in items.iter().enumerate() {
            if let Some(name) = &item.name {
                let text = unraw(name);
                let full = format!("{prefix}{text}");
                if let Some(&first) = self.taken.get(&full) {
                    errors.push(
                        name.span(),
                        format!("duplicate layer name `{text}`; each layer needs its own name"),
                    );
                    errors.push(first, format!("`{text}` is first used here"));
                } else {
                    self.taken.insert(full, name.span());
                }
            }
            if let Some(block) = &item.block {
                let kind = item.kind.to_string();
                let inner = if layers::find(&kind).is_some_and(|spec| spec.scoped.nests(item)) {
                    // An unnamed block's name is generated later; a placeholder unique to
                    // its place keeps its inner names apart from everyone else's.
                    let own = item
                        .name
                        .as_ref()
                        .map_or_else(|| format!("{kind}#{prefix}{position}"), unraw);
                    format!("{prefix}{own}.")
                } else {
                    prefix.to_string()
                };
                self.collect_user_names(&block.items, &inner, errors);
            }
        }
    }

    /// The layer's full name: the user's, its position in a sequence that names by
    /// position (as PyTorch's `nn.Sequential`), or a generated one, after the scope's
    /// prefix.
    fn name_for(&mut self, item: &Item, kind: &str, scope: &Scope, position: usize) -> String {
        if let Some(name) = &item.name {
            return format!("{}{}", scope.prefix, unraw(name));
        }
        if scope.by_position {
            return format!("{}{position}", scope.prefix);
        }
        let stem = snake_case(kind);
        loop {
            let counter = self.counters.entry(kind.to_string()).or_insert(0);
            let candidate = format!("{}{stem}_{counter}", scope.prefix);
            *counter += 1;
            if !self.taken.contains_key(&candidate) {
                self.taken.insert(candidate.clone(), Span::call_site());
                return candidate;
            }
        }
    }
}

pub(crate) fn unraw(ident: &syn::Ident) -> String {
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

/// Where names are given: the prefix of the enclosing blocks (`mixed.b1.`) and
/// whether unnamed layers are named by their position.
#[derive(Default, Clone)]
struct Scope {
    prefix: String,
    by_position: bool,
    /// The position of the sequence's next layer.
    next: usize,
}

/// Whether `item` is a block transparent to names (an unnamed `Residual`).
fn transparent(item: &Item) -> bool {
    layers::find(&item.kind.to_string()).is_some_and(|spec| spec.scoped.transparent(item))
}

/// The state of one walk over a model: its names and the errors found so far. Block
/// layers call back into [`items`](Self::items) for their inner lists.
#[derive(Default)]
pub struct Checker {
    pub(crate) names: Names,
    pub(crate) errors: Errors,
    scope: Scope,
    /// The latest layer checked so far that turned a `[C, H, W]` or `[steps, features]`
    /// input into a vector, as the user knows it (`Flatten`, `pool: GlobalAvgPool`),
    /// with its input and output shapes.
    to_vector: Option<(String, Vec<usize>, Vec<usize>)>,
    /// The blocks the model defines, for suggestions.
    pub(crate) block_names: Vec<String>,
    /// In a graph model, while a node's layers are checked: the inputs and earlier
    /// nodes a layer argument may name, with their shapes (`None` if unknown after an
    /// earlier mistake).
    pub(crate) visible: Option<Vec<(String, Option<Vec<usize>>)>>,
    /// The names layer arguments read, to mark as read.
    pub(crate) read: Vec<syn::Ident>,
}

impl Checker {
    /// Reports a mistake.
    pub fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        self.errors.push(span, message);
    }

    /// The shape of the input or earlier node that the node argument `index` of `call`
    /// names: `Ok(None)` if the argument is not written or the shape is unknown after
    /// an earlier mistake, `Err` once reported (a name that is not an input or an
    /// earlier node, or a model that is not a graph).
    pub fn node_shape(&mut self, call: &Call, index: usize) -> Result<Option<Vec<usize>>, ()> {
        let Some(ident) = call.node(index) else {
            return Ok(None);
        };
        let what = call.spec.args[index].name;
        let Some(visible) = &self.visible else {
            self.push(
                ident.span(),
                format!(
                    "{}: `{what} = {ident}` reads another input or node, which only a model with `inputs: {{ .. }}` has",
                    call.name
                ),
            );
            return Err(());
        };
        let text = ident.to_string();
        let Some((_, shape)) = visible.iter().find(|(name, _)| *name == text) else {
            let mut names: Vec<&str> = visible.iter().map(|(n, _)| n.as_str()).collect();
            names.sort_unstable();
            self.push(
                ident.span(),
                format!(
                    "{}: unknown input or node `{text}`: `{what}` reads an input or a node defined before this one ({})",
                    call.name,
                    names.join(", ")
                ),
            );
            return Err(());
        };
        let shape = shape.clone();
        self.read.push(ident);
        Ok(shape)
    }

    /// For a layer that needs more dimensions than the vector `input` has: when an
    /// earlier layer turned an image or a sequence into a vector, a hint that names the
    /// latest such layer (layers after it may have kept the vector); `None` when no
    /// layer did (the model's input is a vector).
    pub fn vector_hint(&self, input: &[usize]) -> Option<String> {
        let (layer, from, to) = self.to_vector.as_ref()?;
        (input.len() == 1).then(|| {
            format!(
                "; `{layer}` turned {} into {} before it: move this layer before `{layer}`",
                dims(from),
                dims(to)
            )
        })
    }

    /// Checks a layer list fed `shape` (None if unknown after an earlier error),
    /// appending its layers to `out`, and returns the list's output shape.
    pub fn items(
        &mut self,
        items: &[Item],
        mut shape: Option<Vec<usize>>,
        out: &mut Vec<Layer>,
    ) -> Option<Vec<usize>> {
        for item in items {
            // A block transparent to names takes no position: its layers take the next.
            let position = self.scope.next;
            if !transparent(item) {
                self.scope.next += 1;
            }
            shape = self.item(item, position, shape, out);
        }
        shape
    }

    /// Runs `check` with names nested under `name` (`name.conv`, `name.0`), unnamed
    /// layers named by their position, as PyTorch names the modules of a block.
    pub fn nested<R>(&mut self, name: &str, check: impl FnOnce(&mut Self) -> R) -> R {
        let outer = std::mem::replace(
            &mut self.scope,
            Scope {
                prefix: format!("{name}."),
                by_position: true,
                next: 0,
            },
        );
        let result = check(self);
        self.scope = outer;
        result
    }

    /// Checks one layer at `position` of its list, fed `input`; appends it to `out`.
    pub fn item(
        &mut self,
        item: &Item,
        position: usize,
        input: Option<Vec<usize>>,
        out: &mut Vec<Layer>,
    ) -> Option<Vec<usize>> {
        let kind_text = item.kind.to_string();
        let Some(spec) = layers::find(&kind_text) else {
            let bare = item.args.is_none() && item.block.is_none();
            let message = unknown_layer_message(&kind_text, &self.block_names, bare);
            self.push(item.kind.span(), message);
            return None;
        };
        let values = bind_args(item, spec, &mut self.errors)?;
        let mut scope = self.scope.clone();
        // A transparent block's own name (in summaries only) is generated, not a
        // position its layers will take.
        scope.by_position &= !transparent(item);
        // A use of a defined block is named after the block (`basic_0`).
        let custom_kind;
        let kind = match (&item.expanded, &item.custom) {
            (Some(shown), _) => shown.split('(').next().unwrap_or(spec.name),
            // A user layer is named after its type (`gate_0` for `Gate<8>`).
            (None, Some(custom)) => {
                custom_kind = custom
                    .ty
                    .path
                    .segments
                    .last()
                    .map_or_else(|| "custom".to_string(), |s| unraw(&s.ident));
                &custom_kind
            }
            (None, None) => spec.name,
        };
        let name = self.names.name_for(item, kind, &scope, position);
        let call = Call {
            item,
            spec,
            name,
            values,
            input,
        };
        let (op, output) = (spec.check)(self, &call)?;
        // Rule: a sample holds at most MAX_VALUES values, after every layer too.
        if bounded_size(&output).is_none() {
            self.push(
                item.span(),
                format!(
                    "{}: its output {} holds more values than kiln takes (at most {MAX_VALUES} per sample)",
                    call.name,
                    dims(&output)
                ),
            );
            return None;
        }
        let Call { name, input, .. } = call;
        let input = input?;
        // A block that flattens does it through a layer inside it, which is recorded
        // first and is the one to name.
        if input.len() > 1 && output.len() == 1 && op.children().is_empty() {
            let shown = match &item.name {
                Some(_) => format!("{name}: {}", item.kind),
                None => item.kind.to_string(),
            };
            self.to_vector = Some((shown, input.clone(), output.clone()));
        }
        out.push(Layer {
            name,
            display: display(item),
            op,
            input,
            output: output.clone(),
        });
        Some(output)
    }
}

/// Formats a shape as `[6, 4, 4]`.
pub fn dims(d: &[usize]) -> String {
    let parts: Vec<String> = d.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// The layer as the user wrote it, normalised: `Dense(128, bias = false)`; a use of a
/// defined block as it was written (`Basic(64)`).
pub fn display(item: &Item) -> String {
    if let Some(shown) = &item.expanded {
        return shown.clone();
    }
    if let Some(custom) = &item.custom {
        let ty = crate::layers::custom::type_text(&custom.ty);
        return match &custom.output {
            Some(dims) => {
                let dims: Vec<usize> = dims.iter().map(|d| d.value).collect();
                format!("use {ty} -> {}", self::dims(&dims))
            }
            None => format!("use {ty}"),
        };
    }
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

/// The identifier an expression is, if it is one (through invisible groups).
pub fn path_ident(expr: &Expr) -> Option<syn::Ident> {
    match expr {
        Expr::Path(path) => path.path.get_ident().cloned(),
        Expr::Group(group) => path_ident(&group.expr),
        _ => None,
    }
}

/// Argument `index` (in the spec's order) as written, positionally or by keyword.
pub fn written_arg<'a>(item: &'a Item, spec: &LayerSpec, index: usize) -> Option<&'a Arg> {
    let name = spec.args.get(index).map(|a| a.name);
    let mut position = 0;
    item.args.as_ref().and_then(|args| {
        args.list.iter().find(|a| match &a.key {
            Some(key) => name.is_some_and(|n| key == n),
            None => {
                position += 1;
                position - 1 == index
            }
        })
    })
}

/// The span of argument `index` (in the spec's order) as written, or the layer's kind
/// when it is not written.
pub fn values_span(item: &Item, spec: &LayerSpec, index: usize) -> Span {
    written_arg(item, spec, index).map_or(item.kind.span(), |a| a.value.span())
}

/// A literal argument value.
#[derive(Clone, Copy)]
pub enum Value {
    Int(usize),
    Float(f64),
    Bool(bool),
    Pair(usize, usize),
    /// The position of a name among an argument's choices.
    Choice(usize),
    /// The name of an input or a node (read with [`Call::node`](crate::layers::Call::node)).
    Node,
}

impl Value {
    pub fn int(&self) -> usize {
        match *self {
            Value::Int(v) => v,
            _ => 0,
        }
    }
    pub fn float(&self) -> f64 {
        match *self {
            Value::Float(v) => v,
            Value::Int(v) => v as f64,
            Value::Bool(_) | Value::Pair(..) | Value::Choice(_) | Value::Node => f64::NAN,
        }
    }
    pub fn bool(&self) -> bool {
        matches!(self, Value::Bool(true))
    }
    pub fn choice(&self) -> usize {
        match *self {
            Value::Choice(v) => v,
            _ => 0,
        }
    }
    pub fn pair(&self) -> (usize, usize) {
        match *self {
            Value::Pair(a, b) => (a, b),
            Value::Int(v) => (v, v),
            _ => (0, 0),
        }
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
        let limit = arg_spec.max;
        let int_arg = matches!(arg_spec.kind, ArgKind::Int | ArgKind::Pair);
        match literal(&a.value, arg_spec.kind) {
            // Rule: an integer argument is at most its spec's maximum (MAX_ARG unless it
            // says otherwise).
            Some(_) | None if int_arg && too_large(&a.value, limit).is_some() => {
                errors.push(
                    too_large(&a.value, limit).unwrap_or(a.value.span()),
                    format!(
                        "argument `{}` of `{kind}` is larger than kiln takes (at most {limit})",
                        arg_spec.name
                    ),
                );
                ok = false;
            }
            Some(value) => values[slot] = Some(value),
            None => {
                let expected = match arg_spec.kind {
                    ArgKind::Int => "a positive integer literal".to_string(),
                    ArgKind::Float => "a number literal".to_string(),
                    ArgKind::Bool => "`true` or `false`".to_string(),
                    ArgKind::Pair => {
                        "an integer or a pair of integers such as `(3, 5)`".to_string()
                    }
                    ArgKind::Choice(names) => {
                        let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
                        format!("one of {}", names.join(", "))
                    }
                    ArgKind::Node => "the name of an input or a node of the graph".to_string(),
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

/// The span of an integer literal in `expr` (or a pair of them) above `limit`.
fn too_large(expr: &Expr, limit: usize) -> Option<Span> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i
            .base10_parse::<u128>()
            .map_or(true, |v| v > limit as u128)
            .then(|| i.span()),
        Expr::Group(group) => too_large(&group.expr, limit),
        Expr::Paren(paren) => too_large(&paren.expr, limit),
        Expr::Tuple(tuple) => tuple.elems.iter().find_map(|e| too_large(e, limit)),
        _ => None,
    }
}

/// Reads a literal of the expected kind (a float may be written as an integer, and
/// negated).
fn literal(expr: &Expr, kind: ArgKind) -> Option<Value> {
    match expr {
        Expr::Lit(ExprLit { lit, .. }) => match (lit, kind) {
            (Lit::Int(i), ArgKind::Int | ArgKind::Pair) => {
                i.base10_parse::<usize>().ok().map(Value::Int)
            }
            (Lit::Int(i), ArgKind::Float) => i.base10_parse::<f64>().ok().map(Value::Float),
            (Lit::Float(f), ArgKind::Float) => f
                .base10_parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(Value::Float),
            (Lit::Bool(b), ArgKind::Bool) => Some(Value::Bool(b.value)),
            (Lit::Str(text), ArgKind::Choice(names)) => names
                .iter()
                .position(|&n| n == text.value())
                .map(Value::Choice),
            _ => None,
        },
        Expr::Path(path) => match (path.path.get_ident(), kind) {
            (Some(ident), ArgKind::Choice(names)) => {
                names.iter().position(|&n| ident == n).map(Value::Choice)
            }
            (Some(_), ArgKind::Node) => Some(Value::Node),
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
        Expr::Paren(_) if kind == ArgKind::Node => None,
        Expr::Paren(paren) => literal(&paren.expr, kind),
        Expr::Tuple(tuple) if kind == ArgKind::Pair && tuple.elems.len() == 2 => {
            let mut it = tuple.elems.iter().map(|e| literal(e, ArgKind::Int));
            match (it.next()??, it.next()??) {
                (Value::Int(a), Value::Int(b)) => Some(Value::Pair(a, b)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// PyTorch and Keras names that users reach for, mapped to ours.
const ALIASES: &[(&str, &str)] = &[
    ("Linear", "Dense"),
    ("ReLU", "Relu"),
    ("LeakyReLU", "LeakyRelu"),
    ("GELU", "Gelu"),
    ("Conv2D", "Conv2d"),
    ("Conv2DTranspose", "ConvTranspose2d"),
    ("UpSampling2D", "Upsample"),
    ("MaxPooling2D", "MaxPool2d"),
    ("AveragePooling2D", "AvgPool2d"),
    ("GlobalAveragePooling2D", "GlobalAvgPool"),
    ("AdaptiveAvgPool2d", "GlobalAvgPool"),
    ("BatchNormalization", "BatchNorm2d"),
    ("LSTM", "Lstm"),
    ("GRU", "Gru"),
    ("RNN", "Rnn"),
    ("SimpleRNN", "Rnn"),
    ("MultiheadAttention", "MultiHeadAttention"),
    ("Attention", "MultiHeadAttention"),
    ("Residual", "Residual"),
    ("Concatenate", "Concat"),
    ("Multiply", "Mul"),
];

/// `bare`: the layer is written without arguments or a block, as a use of a user
/// layer would be (`gate: Gate`); unless it is near a known name, the message says
/// how to write one.
fn unknown_layer_message(kind: &str, blocks: &[String], bare: bool) -> String {
    // `use` is the user-layer form, not a name to suggest.
    let mut names: Vec<&str> = layers::specs()
        .map(|l| l.name)
        .filter(|name| *name != "use")
        .collect();
    names.extend(blocks.iter().map(String::as_str));
    let suggestion = ALIASES
        .iter()
        .find(|(alias, _)| *alias == kind)
        .map(|(_, ours)| *ours)
        .or_else(|| closest(kind, &names));
    let own = if bare {
        format!(" (a type of your own that implements `kiln::Layer` is written `use {kind}`)")
    } else {
        String::new()
    };
    match suggestion {
        Some(s) => format!("unknown layer `{kind}`; did you mean `{s}`?"),
        None => format!(
            "unknown layer `{kind}`; known layers: {}{own}",
            names.join(", ")
        ),
    }
}

/// The candidate nearest to `word` by edit distance (ignoring case), if near enough.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
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
        assert!(unknown_layer_message("Linear", &[], false).contains("`Dense`"));
        let blocks = ["Basic".to_string()];
        assert!(unknown_layer_message("Basci", &blocks, false).contains("`Basic`"));
    }

    #[test]
    fn generated_names_are_snake_case() {
        assert_eq!(snake_case("LeakyRelu"), "leaky_relu");
        assert_eq!(snake_case("Dense"), "dense");
    }
}
