//! Reporting an error so that it is the only one.
//!
//! Beside an error, the macros still emit the items the user's code expects (the node type, the
//! workflow type), but with their types set to a *poisoned* type: `[(); compile_error!{..}]`.
//! rustc reports the `compile_error!` once, gives the array length the error value, and from then
//! on treats every type mentioning it as already failed: no mismatch, no missing trait, no
//! ambiguity is reported where the broken node or workflow is used. (`compile_error!` in type
//! position would not do: rustc expands it to `()`, and uses of `()` would then fail.)

use proc_macro2::TokenStream;
use quote::quote;

/// A type carrying `error`: rustc reports the error once, here, and stays quiet about every use.
pub(crate) fn poisoned_type(error: &syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote!([(); #error])
}

/// `compile_error!` items for `errors`.
pub(crate) fn report(errors: &[syn::Error]) -> TokenStream {
    errors.iter().map(syn::Error::to_compile_error).collect()
}
