//! `workflow!`: parse -> validate -> expand.

mod ast;
mod expand;
mod parse;
mod validate;

use proc_macro2::TokenStream;

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let file: ast::WorkflowFile = match syn::parse2(input) {
        Ok(file) => file,
        Err(error) => return error.into_compile_error(),
    };
    let errors = validate::validate(&file);
    let mut out = expand::expand(&file);
    if let Err(error) = errors {
        out.extend(error.into_compile_error());
    }
    out
}
