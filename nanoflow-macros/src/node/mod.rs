//! `#[node]`: parse -> validate -> expand.

mod ast;
mod expand;
mod parse;

use proc_macro2::TokenStream;
use quote::quote;

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let error = syn::Error::new_spanned(
                &item,
                "`#[node]` goes on a function: `#[node] fn name(input: In) -> Out { .. }`",
            )
            .into_compile_error();
            return quote!(#error #item);
        }
    };
    match parse::parse(attr, &func) {
        Ok(node) => expand::expand(&node),
        Err(error) => {
            // Keep the user's function so its own uses do not cascade into more errors.
            let error = error.into_compile_error();
            quote!(#error #func)
        }
    }
}
