//! Parses `#[trigger(http = "...")]` and `#[trigger(cron = "...", tz = "...", overlap = "...")]`.

use super::ast::{Trigger, TriggerKind};

const KINDS: &str = "`http = \"POST /path\"` or `cron = \"0 */5 * * * *\"`";

pub(crate) fn parse(attr: &syn::Attribute) -> syn::Result<Trigger> {
    let span = attr.pos_span();
    let mut http: Option<syn::LitStr> = None;
    let mut cron: Option<syn::LitStr> = None;
    let mut tz: Option<syn::LitStr> = None;
    let mut overlap: Option<syn::LitStr> = None;
    attr.parse_nested_meta(|meta| {
        let key = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let slot = match key.as_str() {
            "http" => &mut http,
            "cron" => &mut cron,
            "tz" => &mut tz,
            "overlap" => &mut overlap,
            "queue" | "postgres" | "after" => {
                return Err(meta.error(format!(
                    "`{key}` triggers are not available in this version of nanoflow; use {KINDS}"
                )))
            }
            _ => return Err(meta.error(format!("unknown trigger `{key}`; expected {KINDS}"))),
        };
        if slot.is_some() {
            return Err(meta.error(format!("`{key}` specified more than once")));
        }
        let example = match key.as_str() {
            "http" => "\"POST /orders\"",
            "cron" => "\"0 */5 * * * *\"",
            "tz" => "\"Europe/Paris\"",
            _ => "\"skip\"",
        };
        let value = meta
            .value()
            .map_err(|_| meta.error(format!("`{key}` needs a value, e.g. `{key} = {example}`")))?;
        let expr: syn::Expr = value.parse()?;
        match expr {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(lit),
                ..
            }) => *slot = Some(lit),
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    format!("`{key}` takes a string, e.g. `{key} = {example}`"),
                ))
            }
        }
        Ok(())
    })?;
    let kind = match (http, cron) {
        (Some(lit), None) => {
            if let Some(extra) = tz.as_ref().or(overlap.as_ref()) {
                return Err(syn::Error::new(
                    extra.span(),
                    "`tz` and `overlap` apply to `cron` triggers only",
                ));
            }
            let text = lit.value();
            let (method, path) = match text.trim().split_once(char::is_whitespace) {
                Some((m, p)) => (m.to_owned(), p.trim().to_owned()),
                None => ("POST".to_owned(), text.trim().to_owned()),
            };
            TriggerKind::Http { lit, method, path }
        }
        (None, Some(lit)) => TriggerKind::Cron { lit, tz, overlap },
        (Some(_), Some(c)) => {
            return Err(syn::Error::new(
                c.span(),
                "one trigger per `#[trigger(...)]`; write a second attribute",
            ))
        }
        (None, None) => {
            return Err(syn::Error::new(
                span,
                format!("empty trigger; expected {KINDS}"),
            ))
        }
    };
    Ok(Trigger { kind })
}

trait PosSpan {
    fn pos_span(&self) -> proc_macro2::Span;
}

impl PosSpan for syn::Attribute {
    fn pos_span(&self) -> proc_macro2::Span {
        syn::spanned::Spanned::span(&self.meta)
    }
}
