//! Procedural macros for nanoflow. Use them through the `nanoflow` crate, which re-exports them.
//!
//! Each entry point is parse -> validate -> expand, and a failure still expands the user's item
//! (or a stub) beside the spanned error, so one mistake gives one error.

use proc_macro::TokenStream;

mod ctxt;
mod duration;
mod node;
mod poison;
mod respan;
mod trigger;
mod workflow;

/// Turns a function with exactly one input into a workflow node. See the `nanoflow` crate docs.
#[proc_macro_attribute]
pub fn node(attr: TokenStream, item: TokenStream) -> TokenStream {
    let out = node::expand(attr.into(), item.into());
    debug_print("node", &out);
    out.into()
}

/// Declares workflows as graphs of nodes. See the `nanoflow` crate docs.
#[proc_macro]
pub fn workflow(input: TokenStream) -> TokenStream {
    let out = workflow::expand(input.into());
    debug_print("workflow", &out);
    out.into()
}

/// `NANOFLOW_MACROS_DEBUG=1` prints every expansion to stderr while compiling.
fn debug_print(which: &str, out: &proc_macro2::TokenStream) {
    if std::env::var_os("NANOFLOW_MACROS_DEBUG").is_some_and(|v| v != "0") {
        eprintln!("--- nanoflow {which} expansion ---\n{out}\n");
    }
}
