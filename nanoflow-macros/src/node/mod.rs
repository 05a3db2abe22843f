//! `#[node]`: parse -> validate -> expand.

mod ast;
mod expand;
pub(crate) mod parse;

use proc_macro2::TokenStream;
use quote::quote;

use crate::poison;

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            // Keep the user's item so its own uses do not cascade into more errors.
            let error = not_a_function(&item).into_compile_error();
            return quote!(#error #item);
        }
    };
    let parsed = parse::parse(attr, &func);
    match &parsed.node {
        Some(node) => {
            let mut out = expand::expand(node);
            out.extend(poison::report(&parsed.errors));
            out
        }
        None => expand::stub(&func, parsed.krate.as_ref(), &parsed.errors),
    }
}

/// `#[node]` on a struct, an impl, a trait method without a body, ...
fn not_a_function(item: &TokenStream) -> syn::Error {
    const USAGE: &str = "write `#[node] fn name(input: In) -> Out { .. }`";
    let Ok(parsed) = syn::parse2::<syn::Item>(item.clone()) else {
        return syn::Error::new_spanned(item, format!("`#[node]` goes on a function; {USAGE}"));
    };
    let (what, tokens) = match &parsed {
        syn::Item::Struct(i) => ("a struct", {
            let (k, n) = (&i.struct_token, &i.ident);
            quote!(#k #n)
        }),
        syn::Item::Enum(i) => ("an enum", {
            let (k, n) = (&i.enum_token, &i.ident);
            quote!(#k #n)
        }),
        syn::Item::Union(i) => ("a union", {
            let (k, n) = (&i.union_token, &i.ident);
            quote!(#k #n)
        }),
        syn::Item::Trait(i) => ("a trait", {
            let (k, n) = (&i.trait_token, &i.ident);
            quote!(#k #n)
        }),
        syn::Item::Impl(i) => ("an impl block", {
            let k = &i.impl_token;
            quote!(#k)
        }),
        syn::Item::Mod(i) => ("a module", {
            let (k, n) = (&i.mod_token, &i.ident);
            quote!(#k #n)
        }),
        syn::Item::Const(i) => ("a constant", {
            let (k, n) = (&i.const_token, &i.ident);
            quote!(#k #n)
        }),
        syn::Item::Static(i) => ("a static", {
            let (k, n) = (&i.static_token, &i.ident);
            quote!(#k #n)
        }),
        syn::Item::Type(i) => ("a type alias", {
            let (k, n) = (&i.type_token, &i.ident);
            quote!(#k #n)
        }),
        syn::Item::Use(i) => ("a `use`", {
            let k = &i.use_token;
            quote!(#k)
        }),
        _ => ("this item", item.clone()),
    };
    syn::Error::new_spanned(
        tokens,
        format!("`#[node]` goes on a function, not on {what}; {USAGE}"),
    )
}
