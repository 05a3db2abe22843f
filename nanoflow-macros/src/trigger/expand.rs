//! Trigger metadata for the runtime, plus compile-time checks of the payload type.

use proc_macro2::TokenStream;
use quote::quote;

use crate::respan::respan;

use super::ast::{Trigger, TriggerKind};

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
    }
}

/// A check that the workflow's input fits what the trigger delivers, spanned at the trigger.
pub(crate) fn check(
    private: &TokenStream,
    trigger: &Trigger,
    input_ty: &TokenStream,
) -> TokenStream {
    match &trigger.kind {
        TriggerKind::Http { .. } => TokenStream::new(),
        TriggerKind::Cron { lit, .. } => {
            let check = respan(quote!(#private::cron_input::<#input_ty>), lit.span());
            quote!(const _: () = { let _ = #check; };)
        }
    }
}
