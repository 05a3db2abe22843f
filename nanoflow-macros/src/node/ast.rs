//! The parsed form of a `#[node]` function, keeping the user's spans.

use proc_macro2::Span;

pub(crate) struct NodeDef<'a> {
    pub(crate) func: &'a syn::ItemFn,
    pub(crate) input: syn::Type,
    pub(crate) output: Output,
    pub(crate) is_async: bool,
    pub(crate) options: Options,
    /// `#[node(state, key = field)]`: the state type `T` of `&mut State<T>`, and the key path.
    pub(crate) state: Option<(syn::Type, Vec<syn::Member>)>,
}

pub(crate) enum Output {
    /// `-> T` (including `-> ()` or no return type).
    Plain(syn::Type),
    /// `-> Result<T, E>`: `ok` is `T`, `err` is `E` (spanned for its `Into<NodeError>` check).
    Result { ok: syn::Type, err: syn::Type },
    /// `-> Result<T>` (a user alias): the error type is found through a trait.
    ResultAlias { ok: syn::Type, ret: syn::Type },
}

#[derive(Default)]
pub(crate) struct Options {
    pub(crate) retries: Option<u32>,
    pub(crate) backoff_ns: Option<u64>,
    pub(crate) max_backoff_ns: Option<(u64, Span)>,
    pub(crate) timeout_ns: Option<u64>,
    pub(crate) isolation: Option<(String, Span)>,
    pub(crate) name: Option<String>,
    pub(crate) krate: Option<syn::Path>,
    /// `memory = "128MiB"`: the container's memory limit in bytes.
    pub(crate) memory: Option<u64>,
    /// `cpus = 0.5`: the container's CPU limit in thousandths.
    pub(crate) cpu_millis: Option<u32>,
    /// `state`: the node keeps durable keyed state.
    pub(crate) state: Option<Span>,
    /// `key = customer` (or `key = "customer.id"`): the input field naming the state.
    pub(crate) key: Option<(Vec<syn::Member>, Span)>,
    /// `schema`: the input and output types must implement `schemars::JsonSchema`.
    pub(crate) schema: bool,
    /// `pure`: deterministic, without side effects; its successors need not wait for its record.
    pub(crate) pure: Option<Span>,
}

/// What `#[node]` found: the node when the signature is usable, and every error.
pub(crate) struct Parsed<'a> {
    /// `None` when the signature is not a node's (the expansion is then a poisoned stub).
    pub(crate) node: Option<NodeDef<'a>>,
    /// The `crate = path` override, kept for the stub.
    pub(crate) krate: Option<syn::Path>,
    pub(crate) errors: Vec<syn::Error>,
}
