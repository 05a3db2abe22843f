//! `workflow!`: parse -> validate -> expand.

mod ast;
mod expand;
mod parse;
mod validate;

use proc_macro2::TokenStream;

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    // The parser records syntax errors per workflow and goes on; it fails only on a broken
    // `#![...]` header.
    let file: ast::WorkflowFile = match syn::parse2(input) {
        Ok(file) => file,
        Err(error) => return error.into_compile_error(),
    };
    let errors = validate::validate(&file);
    expand::expand(&file, &errors)
}
