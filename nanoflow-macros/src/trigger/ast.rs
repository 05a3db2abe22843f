//! The parsed form of one `#[trigger(...)]`.

use proc_macro2::Span;
use syn::spanned::Spanned as _;

pub(crate) struct Trigger {
    pub(crate) kind: TriggerKind,
}

pub(crate) enum TriggerKind {
    /// `http = "POST /orders/{id}"`.
    Http {
        lit: syn::LitStr,
        method: String,
        path: String,
    },
    /// `cron = "0 */5 * * * *", tz = "Europe/Paris", overlap = "skip"`.
    Cron {
        lit: syn::LitStr,
        tz: Option<syn::LitStr>,
        overlap: Option<syn::LitStr>,
    },
    /// `queue = "orders.created"`.
    Queue { lit: syn::LitStr },
    /// `postgres = "public.orders", on = "insert|update"`.
    Postgres {
        lit: syn::LitStr,
        on: Option<syn::LitStr>,
    },
    /// `after = checkout` (a path to another workflow).
    After { path: syn::Path },
}

impl Trigger {
    /// The span of the trigger's value (`"POST /orders"`, `"0 */5 * * * *"`, `checkout`).
    pub(crate) fn value_span(&self) -> Span {
        match &self.kind {
            TriggerKind::Http { lit, .. }
            | TriggerKind::Cron { lit, .. }
            | TriggerKind::Queue { lit }
            | TriggerKind::Postgres { lit, .. } => lit.span(),
            TriggerKind::After { path } => path.span(),
        }
    }

    /// `POST /orders` for HTTP triggers, to find two workflows on one route.
    pub(crate) fn route_key(&self) -> Option<String> {
        match &self.kind {
            TriggerKind::Http { method, path, .. } => Some(format!("{method} {path}")),
            _ => None,
        }
    }

    /// The upstream workflow of an `after` trigger, when it is a plain name (a workflow that
    /// the same `workflow!` may declare).
    pub(crate) fn after_ident(&self) -> Option<&syn::Ident> {
        match &self.kind {
            TriggerKind::After { path } => path.get_ident(),
            _ => None,
        }
    }
}

/// `public.orders` for `"orders"` and `"public.orders"`.
pub(crate) fn qualified_table(table: &str) -> String {
    let table = table.trim();
    if table.contains('.') {
        table.to_owned()
    } else {
        format!("public.{table}")
    }
}

/// The operations of `on = "insert|update"`, or all three when absent.
pub(crate) fn operations(on: Option<&syn::LitStr>) -> Vec<String> {
    match on {
        None => vec!["insert".into(), "update".into(), "delete".into()],
        Some(lit) => lit
            .value()
            .split('|')
            .map(|op| op.trim().to_ascii_lowercase())
            .collect(),
    }
}
