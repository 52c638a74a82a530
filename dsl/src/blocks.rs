//! Blocks defined once in a `model!` and used by name, each use with parameters of its
//! own:
//!
//! ```text
//! block Basic(channels, stride = 1) {
//!     conv1: Conv2d(channels, kernel = 3, stride = stride, padding = 1), bn1: BatchNorm2d, Relu,
//!     conv2: Conv2d(channels, kernel = 3, padding = 1), bn2: BatchNorm2d,
//! }
//! pub struct Net { input: [..], layer1: { Basic(64), Basic(64) }, .. }
//! ```
//!
//! Before anything is checked, every use is expanded into the sequence it stands for:
//! the definition's layers with each parameter replaced by the value the use gives
//! (spanned where the use wrote it), under the use's name, as PyTorch names a module's
//! submodules (`layer1.0.conv1.weight`). From there a use is a `Sequential` block like
//! any other, checked on the shape that reaches it; summaries show it as written
//! (`Basic(64)`).

use std::collections::HashMap;

use syn::spanned::Spanned;
use syn::{Expr, Ident};

use crate::check::{closest, display, Errors};
use crate::layers;
use crate::parse::{Block, BlockDef, Item};

/// The model's items with every use of a defined block expanded. Mistakes in the
/// definitions or the uses are reported to `errors`; a use in error is left out.
pub fn expand(defs: &[BlockDef], items: &[Item], errors: &mut Errors) -> Vec<Item> {
    let mut known: HashMap<String, &BlockDef> = HashMap::new();
    for def in defs {
        let name = def.name.to_string();
        // Rule: a block's name is new: neither a layer's nor another block's.
        if layers::find(&name).is_some() {
            errors.push(
                def.name.span(),
                format!("block `{name}` has the name of a built-in layer; choose another name"),
            );
            continue;
        }
        if let Some(first) = known.get(&name) {
            errors.push(def.name.span(), format!("block `{name}` is defined twice"));
            errors.push(first.name.span(), format!("`{name}` is first defined here"));
            continue;
        }
        check_params(def, errors);
        known.insert(name, def);
    }
    let mut expander = Expander {
        known,
        stack: Vec::new(),
        errors,
    };
    expander.items(items, &HashMap::new())
}

/// Rules: parameter names are distinct, and those with a default come last (so that
/// positional values fill the others).
fn check_params(def: &BlockDef, errors: &mut Errors) {
    let mut seen: Vec<String> = Vec::new();
    let mut defaulted = false;
    for param in &def.params {
        let name = param.name.to_string();
        if seen.contains(&name) {
            errors.push(
                param.name.span(),
                format!("block `{}` has two parameters named `{name}`", def.name),
            );
        }
        if param.default.is_some() {
            defaulted = true;
        } else if defaulted {
            errors.push(
                param.name.span(),
                format!(
                    "parameter `{name}` of block `{}` needs a default: it follows one that has a default",
                    def.name
                ),
            );
        }
        seen.push(name);
    }
}

/// The names of the blocks a model defines.
pub fn names(defs: &[BlockDef]) -> Vec<String> {
    defs.iter().map(|d| d.name.to_string()).collect()
}

struct Expander<'a> {
    known: HashMap<String, &'a BlockDef>,
    /// The blocks being expanded, outermost first.
    stack: Vec<String>,
    errors: &'a mut Errors,
}

impl Expander<'_> {
    /// `items` with parameters replaced from `values` and uses expanded.
    fn items(&mut self, items: &[Item], values: &HashMap<String, Expr>) -> Vec<Item> {
        items
            .iter()
            .filter_map(|item| self.item(item, values))
            .collect()
    }

    fn item(&mut self, item: &Item, values: &HashMap<String, Expr>) -> Option<Item> {
        let mut item = item.clone();
        if let Some(args) = &mut item.args {
            for arg in &mut args.list {
                arg.value = substitute(&arg.value, values);
            }
        }
        let kind = item.kind.to_string();
        let Some(&def) = self.known.get(&kind) else {
            if let Some(block) = &item.block {
                let items = self.items(&block.items, values);
                item.block = Some(Block {
                    span: block.span,
                    items,
                });
            }
            return Some(item);
        };
        // Rule: a block does not use itself, directly or through others.
        if self.stack.contains(&kind) {
            let path = self.stack.join("` → `");
            self.errors.push(
                item.kind.span(),
                format!("block `{kind}` uses itself (`{path}` → `{kind}`)"),
            );
            return None;
        }
        if let Some(block) = &item.block {
            self.errors.push(
                block.span,
                format!("`{kind}` is a block defined in this model: its layers are in its definition, not in braces here"),
            );
            return None;
        }
        let bound = self.bind(&item, def)?;
        self.stack.push(kind);
        let items = self.items(&def.body.items, &bound);
        self.stack.pop();
        Some(Item {
            name: item.name.clone(),
            kind: Ident::new("Sequential", item.kind.span()),
            args: None,
            block: Some(Block {
                span: def.body.span,
                items,
            }),
            expanded: Some(display(&item)),
            custom: None,
        })
    }

    /// The value of each parameter for this use: positional, then by keyword, then the
    /// defaults. Rules: as for a layer's arguments.
    fn bind(&mut self, item: &Item, def: &BlockDef) -> Option<HashMap<String, Expr>> {
        let kind = &def.name;
        let names: Vec<String> = def.params.iter().map(|p| p.name.to_string()).collect();
        let usage = if names.is_empty() {
            format!("`{kind}`")
        } else {
            format!("`{kind}({})`", names.join(", "))
        };
        let mut values: Vec<Option<Expr>> = vec![None; names.len()];
        let mut ok = true;
        let mut position = 0;
        for arg in item.args.iter().flat_map(|a| &a.list) {
            let slot = match &arg.key {
                None => {
                    position += 1;
                    if position > names.len() {
                        self.errors.push(
                            arg.value.span(),
                            format!(
                                "block `{kind}` takes {} parameter(s); write {usage}",
                                names.len()
                            ),
                        );
                        ok = false;
                        continue;
                    }
                    position - 1
                }
                Some(key) => {
                    let key_text = key.to_string();
                    let Some(slot) = names.iter().position(|n| *n == key_text) else {
                        let known: Vec<&str> = names.iter().map(String::as_str).collect();
                        let hint = closest(&key_text, &known)
                            .map_or_else(String::new, |c| format!("; did you mean `{c}`?"));
                        self.errors.push(
                            key.span(),
                            format!(
                                "block `{kind}` has no parameter `{key_text}` (it takes: {}){hint}",
                                names.join(", ")
                            ),
                        );
                        ok = false;
                        continue;
                    };
                    slot
                }
            };
            if values[slot].is_some() {
                self.errors.push(
                    arg.value.span(),
                    format!(
                        "parameter `{}` of block `{kind}` is given twice",
                        names[slot]
                    ),
                );
                ok = false;
                continue;
            }
            values[slot] = Some(arg.value.clone());
        }
        let mut bound = HashMap::new();
        for ((name, value), param) in names.iter().zip(values).zip(&def.params) {
            match value.or_else(|| param.default.clone()) {
                Some(value) => {
                    bound.insert(name.clone(), value);
                }
                None if ok => {
                    let at = item.args.as_ref().map_or(item.kind.span(), |a| a.span);
                    self.errors.push(
                        at,
                        format!("block `{kind}` needs its `{name}` parameter: {usage}"),
                    );
                    ok = false;
                }
                None => {}
            }
        }
        ok.then_some(bound)
    }
}

/// `expr` with each bare parameter name replaced by its value, inside tuples and
/// parentheses too; the value keeps the span the use gave it.
fn substitute(expr: &Expr, values: &HashMap<String, Expr>) -> Expr {
    let mut expr = expr.clone();
    match &mut expr {
        Expr::Path(path) => {
            if let Some(value) = path
                .path
                .get_ident()
                .and_then(|i| values.get(&i.to_string()))
            {
                return value.clone();
            }
        }
        Expr::Tuple(tuple) => {
            for element in tuple.elems.iter_mut() {
                *element = substitute(element, values);
            }
        }
        Expr::Paren(paren) => *paren.expr = substitute(&paren.expr, values),
        Expr::Group(group) => *group.expr = substitute(&group.expr, values),
        Expr::Unary(unary) => *unary.expr = substitute(&unary.expr, values),
        _ => {}
    }
    expr
}
