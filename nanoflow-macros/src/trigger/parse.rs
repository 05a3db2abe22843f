//! Parses `#[trigger(http = "...")]`, `#[trigger(cron = "...", tz = "...", overlap = "...")]`,
//! `#[trigger(queue = "...")]`, `#[trigger(postgres = "...", on = "...")]` and
//! `#[trigger(after = workflow)]`.

use super::ast::{Trigger, TriggerKind};

const KINDS: &str = "`http = \"POST /path\"`, `cron = \"0 */5 * * * *\"`, `queue = \"orders.created\"`, `postgres = \"public.orders\"` or `after = other_workflow`";

/// The keys that choose a trigger's kind (one per attribute).
const KIND_KEYS: [&str; 5] = ["http", "cron", "queue", "postgres", "after"];

pub(crate) fn parse(attr: &syn::Attribute) -> syn::Result<Trigger> {
    let span = attr.pos_span();
    let mut http: Option<syn::LitStr> = None;
    let mut cron: Option<syn::LitStr> = None;
    let mut tz: Option<syn::LitStr> = None;
    let mut overlap: Option<syn::LitStr> = None;
    let mut queue: Option<syn::LitStr> = None;
    let mut postgres: Option<syn::LitStr> = None;
    let mut on: Option<syn::LitStr> = None;
    let mut after: Option<syn::Path> = None;
    // The first kind key, to report a second one at its own token.
    let mut kind: Option<String> = None;
    attr.parse_nested_meta(|meta| {
        let key = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        if KIND_KEYS.contains(&key.as_str()) {
            if let Some(first) = &kind {
                if *first != key {
                    return Err(meta.error(format!(
                        "one trigger per `#[trigger(...)]`: this one is already `{first}`; write a second attribute for `{key}`"
                    )));
                }
            }
            kind = Some(key.clone());
        }
        if key == "after" {
            if after.is_some() {
                return Err(meta.error("`after` specified more than once"));
            }
            let value = meta
                .value()
                .map_err(|_| meta.error("`after` needs a workflow, e.g. `after = checkout`"))?;
            let expr: syn::Expr = value.parse()?;
            match expr {
                syn::Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => after = Some(p.path),
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(lit), .. }) => {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!(
                            "`after` takes the name of a workflow, not a string: `after = {}`",
                            lit.value()
                        ),
                    ))
                }
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "`after` takes the name of a workflow, e.g. `after = checkout`",
                    ))
                }
            }
            return Ok(());
        }
        let (slot, example) = match key.as_str() {
            "http" => (&mut http, "\"POST /orders\""),
            "cron" => (&mut cron, "\"0 */5 * * * *\""),
            "tz" => (&mut tz, "\"Europe/Paris\""),
            "overlap" => (&mut overlap, "\"skip\""),
            "queue" => (&mut queue, "\"orders.created\""),
            "postgres" => (&mut postgres, "\"public.orders\""),
            "on" => (&mut on, "\"insert|update\""),
            _ => return Err(meta.error(format!("unknown trigger `{key}`; expected {KINDS}"))),
        };
        if slot.is_some() {
            return Err(meta.error(format!("`{key}` specified more than once")));
        }
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
    if cron.is_none() {
        if let Some(extra) = tz.as_ref().or(overlap.as_ref()) {
            return Err(syn::Error::new(
                extra.span(),
                "`tz` and `overlap` apply to `cron` triggers only",
            ));
        }
    }
    if postgres.is_none() {
        if let Some(on) = &on {
            return Err(syn::Error::new(
                on.span(),
                "`on` applies to `postgres` triggers only",
            ));
        }
    }
    let kind = if let Some(lit) = http {
        let text = lit.value();
        let (method, path) = match text.trim().split_once(char::is_whitespace) {
            Some((m, p)) => (m.to_owned(), p.trim().to_owned()),
            None => ("POST".to_owned(), text.trim().to_owned()),
        };
        TriggerKind::Http { lit, method, path }
    } else if let Some(lit) = cron {
        TriggerKind::Cron { lit, tz, overlap }
    } else if let Some(lit) = queue {
        TriggerKind::Queue { lit }
    } else if let Some(lit) = postgres {
        TriggerKind::Postgres { lit, on }
    } else if let Some(path) = after {
        TriggerKind::After { path }
    } else {
        return Err(syn::Error::new(
            span,
            format!("empty trigger; expected {KINDS}"),
        ));
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

#[cfg(test)]
mod tests {
    use super::super::ast::TriggerKind;
    use quote::quote;

    fn parse(tokens: proc_macro2::TokenStream) -> Result<TriggerKind, String> {
        let attr: syn::Attribute = syn::parse_quote!(#[trigger(#tokens)]);
        super::parse(&attr)
            .map(|t| t.kind)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn kinds() {
        assert!(matches!(
            parse(quote!(queue = "orders.created")),
            Ok(TriggerKind::Queue { .. })
        ));
        assert!(matches!(
            parse(quote!(postgres = "public.orders", on = "insert")),
            Ok(TriggerKind::Postgres { on: Some(_), .. })
        ));
        match parse(quote!(after = shop::checkout)) {
            Ok(TriggerKind::After { path }) => {
                assert_eq!(quote!(#path).to_string(), "shop :: checkout")
            }
            _ => panic!("not an after trigger"),
        }
    }

    #[test]
    fn mistakes() {
        let e = |t| parse(t).err().unwrap();
        assert_eq!(
            e(quote!(after = "checkout")),
            "`after` takes the name of a workflow, not a string: `after = checkout`"
        );
        assert!(e(quote!(queue = "a", http = "/b"))
            .starts_with("one trigger per `#[trigger(...)]`: this one is already `queue`"));
        assert_eq!(
            e(quote!(queue = "a", on = "insert")),
            "`on` applies to `postgres` triggers only"
        );
        assert_eq!(
            e(quote!(after = a, after = b)),
            "`after` specified more than once"
        );
        assert_eq!(
            e(quote!(queue = 3)),
            "`queue` takes a string, e.g. `queue = \"orders.created\"`"
        );
    }
}
