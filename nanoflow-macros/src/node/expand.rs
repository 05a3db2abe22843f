//! Generates the hidden node type and its `Node` and `Accepts` impls beside the user's function.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::ast::{NodeDef, Output};

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
        Output::Plain(ty) => (quote!(#ty), quote!(::core::result::Result::Ok(#call))),
        Output::Result { ok, err } => {
            let convert = quote_spanned!(err.span()=> #private::node_error::<#err>);
            (
                quote!(#ok),
                quote!(match #call {
                    ::core::result::Result::Ok(v) => ::core::result::Result::Ok(v),
                    ::core::result::Result::Err(e) => ::core::result::Result::Err(#convert(e)),
                }),
            )
        }
        Output::ResultAlias { ok, ret } => {
            let convert = quote_spanned!(ret.span()=> #private::into_node_result::<#ok, #ret>);
            (quote!(#ok), quote!(#convert(#call)))
        }
    };

    let opts = &node.options;
    let mut fields = Vec::new();
    if let Some(n) = opts.retries {
        fields.push(quote!(retries: #n,));
    }
    if let Some(ns) = opts.backoff_ns {
        fields.push(quote!(backoff: ::core::time::Duration::from_nanos(#ns),));
    }
    if let Some(ns) = opts.max_backoff_ns {
        fields.push(quote!(max_backoff: ::core::time::Duration::from_nanos(#ns),));
    }
    if let Some(ns) = opts.timeout_ns {
        fields.push(
            quote!(timeout: ::core::option::Option::Some(::core::time::Duration::from_nanos(#ns)),),
        );
    }
    if let Some((iso, _)) = &opts.isolation {
        let variant = if iso == "container" {
            quote!(Container)
        } else {
            quote!(Process)
        };
        fields
            .push(quote!(isolation: ::core::option::Option::Some(#private::Isolation::#variant),));
    }

    quote! {
        #func

        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code, missing_docs, unreachable_pub, clippy::empty_structs_with_brackets)]
        #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy, ::core::default::Default)]
        // Always `pub` (nominally): a `pub` workflow names this type in its `Workflow` impl,
        // which must not leak a private type. It is hidden and, in a private module, unreachable.
        pub struct #ident {}

        impl #private::Node for #ident {
            type Input = #input;
            type Output = #output;
            const NAME: &'static str = #name;
            const OPTIONS: #private::NodeOptions = #private::NodeOptions {
                #(#fields)*
                ..#private::NodeOptions::DEFAULT
            };

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
    }
}
