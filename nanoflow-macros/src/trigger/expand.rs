//! Trigger metadata for the runtime, plus compile-time checks of the payload type.

use proc_macro2::TokenStream;
use quote::quote;

use crate::respan::respan;

use super::ast::{operations, qualified_table, Trigger, TriggerKind};

/// The `TriggerDef` expression for the runtime's graph.
pub(crate) fn definition(private: &TokenStream, trigger: &Trigger) -> TokenStream {
    match &trigger.kind {
        TriggerKind::Http { method, path, .. } => {
            quote!(#private::TriggerDef::Http { method: #method, path: #path })
        }
        TriggerKind::Cron { lit, tz, overlap } => {
            let tz = match tz {
                Some(tz) => quote!(::core::option::Option::Some(#tz)),
                None => quote!(::core::option::Option::None),
            };
            let overlap = match overlap.as_ref().map(|o| o.value()).as_deref() {
                Some("queue") => quote!(Queue),
                Some("concurrent") => quote!(Concurrent),
                _ => quote!(Skip),
            };
            quote!(#private::TriggerDef::Cron { schedule: #lit, tz: #tz, overlap: #private::Overlap::#overlap })
        }
        TriggerKind::Queue { lit } => quote!(#private::TriggerDef::Queue { subject: #lit }),
        TriggerKind::Postgres { lit, on } => {
            let table = qualified_table(&lit.value());
            let on = operations(on.as_ref());
            quote!(#private::TriggerDef::Postgres { table: #table, on: &[#(#on),*] })
        }
        TriggerKind::After { path } => {
            // A workflow's name is its identifier (`Workflow::NAME`), so the last segment of the
            // path names it without a second reference to the type (which would repeat any error).
            let name = path
                .segments
                .last()
                .map(|s| s.ident.to_string())
                .unwrap_or_default();
            quote!(#private::TriggerDef::After { workflow: #name })
        }
    }
}

/// A check that the workflow's input fits what the trigger delivers, spanned at the trigger.
pub(crate) fn check(
    private: &TokenStream,
    trigger: &Trigger,
    input_ty: &TokenStream,
) -> TokenStream {
    match &trigger.kind {
        // Any input that is `Data` (every node input is) can come from JSON.
        TriggerKind::Http { .. } | TriggerKind::Queue { .. } => TokenStream::new(),
        TriggerKind::Cron { lit, .. } => {
            let check = respan(quote!(#private::cron_input::<#input_ty>), lit.span());
            quote!(const _: () = { let _ = #check; };)
        }
        TriggerKind::Postgres { lit, .. } => {
            let check = respan(quote!(#private::db_event_input::<#input_ty>), lit.span());
            quote!(const _: () = { let _ = #check; };)
        }
        TriggerKind::After { path } => {
            let span = syn::spanned::Spanned::span(path);
            let check = respan(quote!(#private::after_input::<#path, #input_ty>), span);
            quote!(const _: () = { let _ = #check; };)
        }
    }
}
