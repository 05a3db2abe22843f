//! Generates the hidden node type and its `Node` and `Accepts` impls beside the user's function.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::ast::{NodeDef, Output};
use crate::poison;
use crate::respan;

pub(crate) fn expand(node: &NodeDef<'_>) -> TokenStream {
    let func = node.func;
    let ident = &func.sig.ident;
    let krate = node
        .options
        .krate
        .as_ref()
        .map(|p| quote!(#p))
        .unwrap_or_else(|| quote!(::nanoflow));
    let private = quote!(#krate::__private);
    let declaration = declare(ident);
    let input = &node.input;
    let name = node
        .options
        .name
        .clone()
        .unwrap_or_else(|| ident.to_string());
    let arg = quote!(__nanoflow_input);
    let call = if node.is_async {
        quote!(#ident(#arg).await)
    } else {
        quote!(#ident(#arg))
    };
    let (output, body) = match &node.output {
        Output::Plain(ty) => (ty, quote!(::core::result::Result::Ok(#call))),
        Output::Result { ok, err } => {
            let convert = quote_spanned!(err.span()=> #private::node_error::<#err>);
            let body = quote!(match #call {
                ::core::result::Result::Ok(v) => ::core::result::Result::Ok(v),
                ::core::result::Result::Err(e) => ::core::result::Result::Err(#convert(e)),
            });
            (ok, body)
        }
        Output::ResultAlias { ok, ret } => {
            let convert = quote_spanned!(ret.span()=> #private::into_node_result::<#ok, #ret>);
            (ok, quote!(#convert(#call)))
        }
    };

    let input_type = checked_data(&private, input);
    let output_type = checked_data(&private, output);
    let schema_checks = if node.options.schema {
        let input_check = require_schema(&private, input);
        let output_check = require_schema(&private, output);
        quote!(#input_check #output_check)
    } else {
        quote!()
    };

    // Options through the runtime's `const` setters, never a struct literal: the runtime can
    // grow a field without breaking any expansion.
    let opts = &node.options;
    let mut setters = Vec::new();
    if let Some(n) = opts.retries {
        setters.push(quote!(.with_retries(#n)));
    }
    if let Some(ns) = opts.backoff_ns {
        setters.push(quote!(.with_backoff(::core::time::Duration::from_nanos(#ns))));
    }
    if let Some((ns, _)) = opts.max_backoff_ns {
        setters.push(quote!(.with_max_backoff(::core::time::Duration::from_nanos(#ns))));
    }
    if let Some(ns) = opts.timeout_ns {
        setters.push(quote!(.with_timeout(::core::time::Duration::from_nanos(#ns))));
    }
    if let Some(m) = opts.memory {
        setters.push(quote!(.with_memory_bytes(#m)));
    }
    if let Some(c) = opts.cpu_millis {
        setters.push(quote!(.with_cpu_millis(#c)));
    }
    if let Some((iso, _)) = &opts.isolation {
        let variant = if iso == "container" {
            quote!(Container)
        } else {
            quote!(Process)
        };
        setters.push(quote!(.with_isolation(#private::Isolation::#variant)));
    }

    // A stateful node: the user's function takes `(input, &mut State<T>)`.
    let stateful = node.state.as_ref().map(|(state_ty, key)| {
        let call_state = if node.is_async {
            quote!(#ident(#arg, &mut __nanoflow_state).await)
        } else {
            quote!(#ident(#arg, &mut __nanoflow_state))
        };
        let body_state = match &node.output {
            Output::Plain(_) => quote!(::core::result::Result::Ok(#call_state)),
            Output::Result { err, .. } => {
                let convert = quote_spanned!(err.span()=> #private::node_error::<#err>);
                quote!(match #call_state {
                    ::core::result::Result::Ok(v) => ::core::result::Result::Ok(v),
                    ::core::result::Result::Err(e) => ::core::result::Result::Err(#convert(e)),
                })
            }
            Output::ResultAlias { ok, ret } => {
                let convert = quote_spanned!(ret.span()=> #private::into_node_result::<#ok, #ret>);
                quote!(#convert(#call_state))
            }
        };
        (state_ty, key, body_state)
    });
    let pure = node
        .options
        .pure
        .map(|span| quote_spanned!(span=> const PURE: bool = true;));
    let state_items = match &stateful {
        None => quote!(
            type State = ();
        ),
        Some((state_ty, key, body_state)) => quote! {
            type State = #state_ty;
            const STATEFUL: bool = true;

            fn state_key(#arg: &#input) -> ::std::string::String {
                ::std::string::ToString::to_string(&#arg #(.#key)*)
            }

            fn call_with_state(
                #arg: #input,
                __nanoflow_state: #state_ty,
            ) -> impl ::core::future::Future<
                Output = (::core::result::Result<#output, #private::NodeError>, #state_ty),
            > + ::core::marker::Send {
                async move {
                    let mut __nanoflow_state = #private::State::new(__nanoflow_state);
                    let result = #body_state;
                    (result, __nanoflow_state.into_inner())
                }
            }
        },
    };
    // `call` of a stateful node runs it on a fresh (default) state.
    let body = match &stateful {
        None => body,
        Some((state_ty, _, body_state)) => quote! {
            let mut __nanoflow_state =
                #private::State::new(<#state_ty as ::core::default::Default>::default());
            #body_state
        },
    };

    quote! {
        #func

        #declaration

        #schema_checks

        const _: () = {
        #[allow(unused_imports)]
        use #private::NotData as _;

        impl #private::Node for #ident {
            type Input = #input_type;
            type Output = #output_type;
            #state_items
            #pure
            const NAME: &'static str = #name;
            const OPTIONS: #private::NodeOptions =
                #private::NodeOptions::DEFAULT #(#setters)*;

            #[inline]
            fn call(#arg: #input) -> impl ::core::future::Future<
                Output = ::core::result::Result<#output, #private::NodeError>,
            > + ::core::marker::Send {
                async move { #body }
            }

            fn duplicate(#arg: &#input) -> ::core::result::Result<#input, #private::NodeError> {
                #[allow(unused_imports)]
                use #private::{DuplicateByClone as _, DuplicateByJson as _};
                (&#private::Duplicate(#arg)).__nanoflow_duplicate()
            }
        }

        impl #private::Accepts<#input, #input> for #ident {
            #[inline(always)]
            fn into_input(value: #input) -> #input {
                value
            }
        }
        };
    }
}

/// The type of `type Input` or `type Output`: the user's `ty` when it is `Data`, and otherwise
/// a type whose array length fails to evaluate with a message spanned at `ty`. That is the one
/// error; the node's input (or output) is then an error type, and rustc reports nothing else
/// about it, neither here nor in the workflows using the node. See `__private::Probe`.
fn checked_data(private: &TokenStream, ty: &syn::Type) -> TokenStream {
    let probe = quote!(<#private::Probe<#ty>>::IS_DATA);
    let message = format!(
        "`{}` cannot flow between nodes: add `#[derive(serde::Serialize, serde::Deserialize)]` to it (node inputs and outputs are serialized, and must be owned, `Send` and `Sync`)",
        respan::type_text(ty)
    )
    .replace('{', "{{")
    .replace('}', "}}");
    let panic = respan::respan_over(quote!(::core::panic!(#message)), ty);
    quote! {
        <#private::Pick<{ #probe }> as #private::Choose<#ty, [(); if #probe { 0 } else { #panic }]>>::Type
    }
}

/// `#[node(schema)]`: a check that `ty` implements `schemars::JsonSchema`, spanned at `ty` so
/// that a missing derive is reported on the user's type.
fn require_schema(private: &TokenStream, ty: &syn::Type) -> TokenStream {
    let check = respan::respan_over(quote!(#private::require_schema::<#ty>), ty);
    quote!(const _: () = #check();)
}

/// The hidden node type, named like the function.
fn declare(ident: &syn::Ident) -> TokenStream {
    quote! {
        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code, missing_docs, unreachable_pub, clippy::empty_structs_with_brackets)]
        #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy, ::core::default::Default)]
        // Always `pub` (nominally): a `pub` workflow names this type in its `Workflow` impl,
        // which must not leak a private type. It is hidden and, in a private module, unreachable.
        pub struct #ident {}
    }
}

/// Beside a signature error: the user's function, and a node type whose input and output are
/// poisoned with the first error, so that workflows using the node add no errors of their own.
pub(crate) fn stub(
    func: &syn::ItemFn,
    krate: Option<&syn::Path>,
    errors: &[syn::Error],
) -> TokenStream {
    let Some((first, rest)) = errors.split_first() else {
        return quote!(#func);
    };
    if func.sig.receiver().is_some() {
        // A method, in an impl block: no node type can be declared there.
        let errors = poison::report(errors);
        return quote!(#errors #func);
    }
    let ident = &func.sig.ident;
    let name = ident.to_string();
    let krate = krate
        .map(|p| quote!(#p))
        .unwrap_or_else(|| quote!(::nanoflow));
    let private = quote!(#krate::__private);
    let declaration = declare(ident);
    let poisoned = poison::poisoned_type(first);
    let rest = poison::report(rest);
    quote! {
        #[allow(dead_code)]
        #func

        #declaration

        const _: () = {
            type __nanoflow_poisoned = #poisoned;

            impl #private::Node for #ident {
                type Input = __nanoflow_poisoned;
                type Output = __nanoflow_poisoned;
                type State = ();
                const NAME: &'static str = #name;
                const OPTIONS: #private::NodeOptions = #private::NodeOptions::DEFAULT;

                fn call(_: __nanoflow_poisoned) -> impl ::core::future::Future<
                    Output = ::core::result::Result<__nanoflow_poisoned, #private::NodeError>,
                > + ::core::marker::Send {
                    ::core::future::pending()
                }

                fn duplicate(
                    _: &__nanoflow_poisoned,
                ) -> ::core::result::Result<__nanoflow_poisoned, #private::NodeError> {
                    ::core::unreachable!()
                }
            }

            impl #private::Accepts<__nanoflow_poisoned, __nanoflow_poisoned> for #ident {
                fn into_input(value: __nanoflow_poisoned) -> __nanoflow_poisoned {
                    value
                }
            }
        };

        #rest
    }
}
