//! The parsed form of one `#[trigger(...)]`.

use proc_macro2::Span;

pub(crate) struct Trigger {
    /// The whole attribute, for errors about the trigger as a whole.
    pub(crate) span: Span,
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
    /// `POST /orders` for HTTP triggers, to find two workflows on one route.
    pub(crate) fn route_key(&self) -> Option<String> {
        match &self.kind {
            TriggerKind::Http { method, path, .. } => Some(format!("{method} {path}")),
            TriggerKind::Cron { .. } => None,
        }
    }
}
