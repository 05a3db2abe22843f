//! The parsed form of one `#[trigger(...)]`.

use proc_macro2::Span;

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
}

impl Trigger {
    /// The span of the trigger's value (`"POST /orders"`, `"0 */5 * * * *"`).
    pub(crate) fn value_span(&self) -> Span {
        match &self.kind {
            TriggerKind::Http { lit, .. } | TriggerKind::Cron { lit, .. } => lit.span(),
        }
    }

    /// `POST /orders` for HTTP triggers, to find two workflows on one route.
    pub(crate) fn route_key(&self) -> Option<String> {
        match &self.kind {
            TriggerKind::Http { method, path, .. } => Some(format!("{method} {path}")),
            TriggerKind::Cron { .. } => None,
        }
    }
}
