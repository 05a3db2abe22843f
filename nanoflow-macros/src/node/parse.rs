//! Parses and validates `#[node(...)]` options and the function signature.

use proc_macro2::TokenStream;

use super::ast::{NodeDef, Options, Output};
use crate::ctxt::Ctxt;
use crate::duration;

const OPTIONS: &str =
    "`retries`, `backoff`, `max_backoff`, `timeout`, `isolation`, `name`, `crate`";

pub(crate) fn parse(attr: TokenStream, func: &syn::ItemFn) -> syn::Result<NodeDef<'_>> {
    let mut cx = Ctxt::default();
    let options = parse_options(&mut cx, attr);
    let sig = &func.sig;

    if let Some(token) = &sig.constness {
        cx.error_spanned_by(token, "a node cannot be a `const fn`");
    }
    if let Some(token) = &sig.unsafety {
        cx.error_spanned_by(token, "a node cannot be an `unsafe fn`");
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned_by(abi, "a node cannot have an `extern` ABI");
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        cx.error_spanned_by(
            &sig.generics,
            format!(
                "node `{}` cannot be generic: a node has one concrete input and output type",
                sig.ident
            ),
        );
    }
    if let Some(variadic) = &sig.variadic {
        cx.error_spanned_by(variadic, "a node cannot be variadic");
    }

    let name = &sig.ident;
    let mut input = None;
    match sig.inputs.len() {
        0 => cx.error_at(
            sig.paren_token.span.join(),
            format!(
                "node `{name}` takes no input; a node takes exactly one input, e.g. `fn {name}(input: MyInput)` (use `()` for none: `fn {name}(_: ())`)"
            ),
        ),
        1 => {}
        n => cx.error_spanned_by(
            &sig.inputs,
            format!(
                "node `{name}` takes {n} inputs; a node takes exactly one input: take a tuple instead, e.g. `fn {name}(inputs: (A, B))`"
            ),
        ),
    }
    if let Some(first) = sig.inputs.first() {
        match first {
            syn::FnArg::Receiver(r) => cx.error_spanned_by(
                r,
                format!(
                    "node `{name}` cannot take `self`: a node is a free function with one input"
                ),
            ),
            syn::FnArg::Typed(pat) => {
                check_owned(&mut cx, &pat.ty);
                input = Some((*pat.ty).clone());
            }
        }
    }

    let output = parse_output(&sig.output);
    cx.check()?;
    Ok(NodeDef {
        func,
        input: input.expect("validated: exactly one typed input"),
        output,
        is_async: sig.asyncness.is_some(),
        options,
    })
}

fn check_owned(cx: &mut Ctxt, ty: &syn::Type) {
    match ty {
        syn::Type::Reference(r) => cx.error_spanned_by(
            r,
            "a node input must be an owned type (values are moved between nodes and may be journaled): remove the `&`",
        ),
        syn::Type::ImplTrait(t) => {
            cx.error_spanned_by(t, "a node input must be a concrete type, not `impl Trait`")
        }
        syn::Type::Infer(t) => cx.error_spanned_by(t, "a node input must be a concrete type, not `_`"),
        _ => {}
    }
}

fn parse_output(ret: &syn::ReturnType) -> Output {
    let ty = match ret {
        syn::ReturnType::Default => return Output::Plain(syn::parse_quote!(())),
        syn::ReturnType::Type(_, ty) => ty,
    };
    if let syn::Type::Path(p) = &**ty {
        if p.qself.is_none() {
            if let Some(last) = p.path.segments.last() {
                if last.ident == "Result" {
                    if let syn::PathArguments::AngleBracketed(args) = &last.arguments {
                        let types: Vec<&syn::Type> = args
                            .args
                            .iter()
                            .filter_map(|a| match a {
                                syn::GenericArgument::Type(t) => Some(t),
                                _ => None,
                            })
                            .collect();
                        match types.as_slice() {
                            [ok, err] => {
                                return Output::Result {
                                    ok: (*ok).clone(),
                                    err: (*err).clone(),
                                }
                            }
                            [ok] => {
                                return Output::ResultAlias {
                                    ok: (*ok).clone(),
                                    ret: (**ty).clone(),
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    Output::Plain((**ty).clone())
}

fn parse_options(cx: &mut Ctxt, attr: TokenStream) -> Options {
    let mut options = Options::default();
    let mut seen: Vec<String> = Vec::new();
    let parser = syn::meta::parser(|meta| {
        let key = match meta.path.get_ident() {
            Some(ident) => ident.to_string(),
            None if meta.path.is_ident("crate") => "crate".to_owned(),
            None => {
                let path = &meta.path;
                let shown = quote::quote!(#path).to_string().replace(' ', "");
                return Err(meta.error(format!(
                    "unknown `#[node]` option `{shown}`; expected one of {OPTIONS}"
                )));
            }
        };
        if seen.contains(&key) {
            return Err(meta.error(format!("`{key}` specified more than once")));
        }
        seen.push(key.clone());
        match key.as_str() {
            "retries" => {
                let lit: syn::LitInt = meta.value()?.parse()?;
                let n: u32 = lit.base10_parse().map_err(|_| {
                    syn::Error::new(
                        lit.span(),
                        "`retries` must be a whole number from 0 to 4294967295",
                    )
                })?;
                options.retries = Some(n);
            }
            "backoff" | "max_backoff" | "timeout" => {
                let lit: syn::LitStr = meta.value()?.parse()?;
                let nanos =
                    duration::parse(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))?;
                if nanos == 0 && key == "timeout" {
                    return Err(syn::Error::new(
                        lit.span(),
                        "`timeout` must be longer than zero",
                    ));
                }
                match key.as_str() {
                    "backoff" => options.backoff_ns = Some(nanos),
                    "max_backoff" => options.max_backoff_ns = Some(nanos),
                    _ => options.timeout_ns = Some(nanos),
                }
            }
            "isolation" => {
                let lit: syn::LitStr = meta.value()?.parse()?;
                let value = lit.value();
                if value != "process" && value != "container" {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!(
                            "unknown isolation `{value}`; expected \"process\" or \"container\""
                        ),
                    ));
                }
                options.isolation = Some((value, lit.span()));
            }
            "name" => {
                let lit: syn::LitStr = meta.value()?.parse()?;
                let value = lit.value();
                let valid = !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!("invalid node name `{value}`; use letters, digits, `_` and `-`"),
                    ));
                }
                options.name = Some(value);
            }
            "crate" => {
                let value = meta.value()?;
                options.krate = Some(if value.peek(syn::LitStr) {
                    value.parse::<syn::LitStr>()?.parse()?
                } else {
                    value.parse()?
                });
            }
            other => {
                return Err(meta.error(format!(
                    "unknown `#[node]` option `{other}`; expected one of {OPTIONS}"
                )))
            }
        }
        Ok(())
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, attr) {
        cx.push(e);
    }
    if let (Some(b), Some(m)) = (options.backoff_ns, options.max_backoff_ns) {
        if m < b {
            cx.error_at(
                proc_macro2::Span::call_site(),
                "`max_backoff` must not be shorter than `backoff`",
            );
        }
    }
    options
}
