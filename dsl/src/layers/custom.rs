//! `use Type -> [dims]`: a layer a user wrote, through `kiln::Layer`.
//!
//! The macro cannot read the type's constants, so the use states the output shape
//! (or keeps the input's) and the generated code checks both shapes, and the
//! parameter names, in constants that fail the build with a message naming the layer.
//! The layer's parameters and its saved scratch come after everything the macro can
//! count (see [`crate::codegen::CustomPlan`]), so every other offset stays a literal.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};

use super::activation::Act;
use super::{size, Call, CheckFn, Checked, GradFlow, GradWrite, LayerSpec, Op, Scoping, Step};
use crate::check::{dims, Checker, Layer};
use crate::codegen::{CustomPlan, Plan};

pub const SPECS: &[LayerSpec] = &[LayerSpec {
    name: "use",
    args: &[],
    block: false,
    usage: "`use Gate<8>` or `use Gate<8> -> [4]`",
    computes: true,
    reads_tokens: false,
    scoped: Scoping::Never,
    check: check as CheckFn,
}];

struct Custom {
    ty: syn::TypePath,
    /// Whether the use states its output shape.
    stated: bool,
}

fn check(checker: &mut Checker, call: &Call) -> Option<Checked> {
    let custom = call.item.custom.as_ref()?;
    let output = match &custom.output {
        Some(dims) => {
            let mut ok = true;
            for dim in dims.iter().filter(|d| d.value == 0) {
                checker.push(dim.span, "an output dimension must be at least 1");
                ok = false;
            }
            ok.then(|| dims.iter().map(|d| d.value).collect::<Vec<_>>())?
        }
        None => call.input.clone()?,
    };
    call.input.as_ref()?;
    let op = Custom {
        ty: custom.ty.clone(),
        stated: custom.output.is_some(),
    };
    Some((Box::new(op), output))
}

/// The type as written, without the spaces tokens put around `<`, `>`, `::` and
/// before `,` (`MyLinear<6, 5>`, `Double<{ 2 * 2 }>`).
pub fn type_text(ty: &syn::TypePath) -> String {
    let text = quote!(#ty).to_string();
    let mut out = String::new();
    for part in text.split(' ') {
        let joins = out.ends_with(['<', ':']) || part.starts_with(['<', '>', ':', ',']);
        if !out.is_empty() && !joins {
            out.push(' ');
        }
        out.push_str(part);
    }
    out
}

/// `<Type as ::kiln::__private::Layer>`, spanned at the type.
fn layer_trait(ty: &syn::TypePath) -> TokenStream {
    let span = syn::spanned::Spanned::span(ty);
    quote_spanned!(span=> <#ty as ::kiln::__private::Layer>)
}

impl Op for Custom {
    fn flops(&self, _: &Layer) -> u64 {
        0
    }

    fn custom_layer(&self) -> Option<TokenStream> {
        Some(layer_trait(&self.ty))
    }

    fn plan(&self, layer: &Layer, plan: &mut Plan, input: usize, _: Option<Act>) -> usize {
        let output = plan.node(size(&layer.output));
        let span = syn::spanned::Spanned::span(&self.ty);
        let index = plan.custom(CustomPlan {
            layer: layer_trait(&self.ty),
            scope: layer.name.clone(),
            checks: checks(layer, &self.ty, self.stated, span),
        });
        plan.push(CustomStep {
            layer: layer_trait(&self.ty),
            index,
            input,
            output,
        });
        output
    }
}

/// The constants that check the type against this use: its shapes and its names.
fn checks(layer: &Layer, ty: &syn::TypePath, stated: bool, span: Span) -> TokenStream {
    let name = &layer.name;
    let shown = type_text(ty);
    let (input, output) = (&layer.input, &layer.output);
    let input_message = format!(
        "layer `{name}`: `{shown}` does not take {}, the shape that reaches it (its `Layer::INPUT` differs)",
        dims(input)
    );
    let output_message = if stated {
        format!(
            "layer `{name}`: `{shown}` does not give {}, the shape `->` states (its `Layer::OUTPUT` differs)",
            dims(output)
        )
    } else {
        format!(
            "layer `{name}`: `{shown}` does not keep the shape {}: state its output with `-> [..]` (its `Layer::OUTPUT` differs)",
            dims(output)
        )
    };
    let names_message = format!(
        "layer `{name}`: `{shown}` declares a parameter name that is empty, repeated, or not letters, digits, `_` and inner `.`"
    );
    let buffers_message = format!(
        "layer `{name}`: `{shown}` declares a buffer name that is empty, repeated, also a parameter's, or not letters, digits, `_` and inner `.`"
    );
    let count_message = format!(
        "layer `{name}`: `{shown}` declares a parameter as a count (`ParamDecl::count` is for buffers)"
    );
    let layer = layer_trait(ty);
    let private = quote!(::kiln::__private);
    quote_spanned! {span=>
        const _: () = if !#private::same_shape(#layer::INPUT, &[#(#input),*]) {
            ::core::panic!("{}", #input_message)
        } else if !#private::same_shape(#layer::OUTPUT, &[#(#output),*]) {
            ::core::panic!("{}", #output_message)
        };
        const _: () = ::core::assert!(#private::valid_names(#layer::PARAMS), "{}", #names_message);
        const _: () = ::core::assert!(
            #private::valid_buffer_names(#layer::PARAMS, #layer::BUFFERS),
            "{}",
            #buffers_message
        );
        const _: () = ::core::assert!(#private::all_float(#layer::PARAMS), "{}", #count_message);
    }
}

struct CustomStep {
    layer: TokenStream,
    index: usize,
    input: usize,
    output: usize,
}

impl CustomStep {
    /// `let range = ..; let fixed = ..;` over the layer's parameters and its part of
    /// the fixed scratch.
    fn range(&self) -> TokenStream {
        let index = self.index;
        let next = index + 1;
        quote! {
            let range = __KILN_PARAM_AT[#index]..__KILN_PARAM_AT[#next];
            let fixed = __KILN_FIXED_AT[#index]..__KILN_FIXED_AT[#next];
        }
    }

    /// The layer's buffers.
    fn buffers(&self) -> TokenStream {
        let index = self.index;
        let next = index + 1;
        quote!(&mut buffers[__KILN_BUFFER_AT[#index]..__KILN_BUFFER_AT[#next]])
    }

    fn saved(&self) -> TokenStream {
        let index = self.index;
        quote!(::core::option::Option::Some(__KILN_NODES + #index))
    }
}

impl Step for CustomStep {
    fn inputs(&self) -> Vec<usize> {
        vec![self.input]
    }

    fn output(&self) -> usize {
        self.output
    }

    fn has_params(&self) -> bool {
        true
    }

    fn uses_mode(&self) -> Option<bool> {
        Some(true)
    }

    fn uses_buffers(&self) -> bool {
        true
    }

    fn updates_inside(&self) -> bool {
        true
    }

    fn forward(&self) -> TokenStream {
        let CustomStep {
            layer,
            input,
            output,
            ..
        } = self;
        let (range, saved, buffers) = (self.range(), self.saved(), self.buffers());
        let private = quote!(::kiln::__private);
        quote! {
            {
                #range
                let io = ws.forward_io(#input, #output, #saved);
                #layer::forward(#private::Forward {
                    params: #private::Params::new(&params[range], #layer::PARAMS),
                    input: io.input,
                    output: io.output,
                    saved: io.aux,
                    buffers: #buffers,
                    fixed: &mut io.fixed[fixed],
                    batch,
                    training: mode.training(),
                    rng: mode.rng(),
                });
            }
        }
    }

    fn backward(&self, flow: &mut GradFlow) -> TokenStream {
        let CustomStep {
            layer,
            input,
            output,
            ..
        } = self;
        let (range, saved) = (self.range(), self.saved());
        let private = quote!(::kiln::__private);
        let some = quote!(::core::option::Option::Some);
        let none = quote!(::core::option::Option::None);
        let zero = quote!(<T as #private::Float>::ZERO);
        // The layer adds into its input's gradient: as the first writer, it starts
        // from zeros.
        let grad_input = match flow.write(*input) {
            None => none.clone(),
            Some(first) => {
                let write = if first == GradWrite::Replace {
                    quote!({
                        io.grad_input.fill(#zero);
                        #some(io.grad_input)
                    })
                } else {
                    quote!(#some(io.grad_input))
                };
                if flow.always[*input] {
                    write
                } else {
                    quote!(if to_input { #write } else { #none })
                }
            }
        };
        quote! {
            {
                #range
                let io = ws.backward_io(#input, #output, #saved);
                let grad = &mut grads[range.clone()];
                grad.fill(#zero);
                #layer::backward(#private::Backward {
                    params: #private::Params::new_unique(&mut params[range.clone()], #layer::PARAMS),
                    input: io.input,
                    output: io.output,
                    saved: io.aux,
                    fixed: &mut io.fixed[fixed],
                    grad_output: io.grad_output,
                    grad_params: #private::ParamsMut::new(grad, #layer::PARAMS),
                    grad_input: #grad_input,
                    batch,
                });
                if let #some(rate) = update {
                    #private::apply_linear_step(&mut params[range.clone()], &grads[range], rate);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::type_text;

    #[test]
    fn types_read_as_written() {
        let text = |source: &str| type_text(&syn::parse_str(source).unwrap());
        assert_eq!(text("MyLinear<6, 5>"), "MyLinear<6, 5>");
        assert_eq!(text("Double<{ 2 * 2 }>"), "Double<{ 2 * 2 }>");
        assert_eq!(text("crate::layers::Gate<8>"), "crate::layers::Gate<8>");
        assert_eq!(text("Swish"), "Swish");
    }
}
