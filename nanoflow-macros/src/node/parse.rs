//! Parses and validates `#[node(...)]` options and the function signature.

use proc_macro2::TokenStream;
use syn::meta::ParseNestedMeta;

use super::ast::{NodeDef, Options, Output, Parsed};
use crate::ctxt::Ctxt;
use crate::duration;

const OPTIONS: &str =
    "`retries`, `backoff`, `max_backoff`, `timeout`, `isolation`, `memory`, `cpus`, `name`, `state`, `key`, `pure`, `schema` or `crate`";

/// Parses the options and the signature, collecting every error. Bad options alone still give a
/// node (with default settings), so its uses in workflows are checked as usual.
pub(crate) fn parse(attr: TokenStream, func: &syn::ItemFn) -> Parsed<'_> {
    let mut cx = Ctxt::default();
    let options = parse_options(&mut cx, attr);
    let krate = options.krate.clone();
    let mut sig_errors = Ctxt::default();
    let stateful = options.state.is_some();
    let (input, state_ty) = parse_signature(&mut sig_errors, &func.sig, stateful);
    let state = match (options.state, &options.key, state_ty) {
        (Some(_), Some((key, _)), Some(ty)) => Some((ty, key.clone())),
        (Some(span), None, _) => {
            // Without a key the function cannot be called as a node: a signature error.
            sig_errors.error_at(
                span,
                "`state` needs `key = field`: the input field whose value selects the state, e.g. `#[node(state, key = customer)]`",
            );
            None
        }
        (None, Some((_, span)), _) => {
            cx.error_at(*span, "`key` applies only to stateful nodes: add `state`, e.g. `#[node(state, key = customer)]`");
            None
        }
        _ => None,
    };
    if let (Some(pure), Some(_)) = (options.pure, options.state) {
        cx.error_at(
            pure,
            "`pure` and `state` exclude each other: a stateful node writes its state, which a pure node must not (remove `pure`)",
        );
    }
    let node = match input {
        Some(input) if !sig_errors.has_errors() => Some(NodeDef {
            func,
            input,
            output: parse_output(&func.sig.output),
            is_async: func.sig.asyncness.is_some(),
            options,
            state,
        }),
        _ => None,
    };
    // Signature errors first: they are the ones that poison the node.
    let mut errors = sig_errors.into_errors();
    errors.extend(cx.into_errors());
    Parsed {
        node,
        krate,
        errors,
    }
}

/// `&mut State<T>` (any path ending in `State`): `T`.
fn state_param(ty: &syn::Type) -> Option<syn::Type> {
    let syn::Type::Reference(r) = ty else {
        return None;
    };
    r.mutability?;
    let syn::Type::Path(p) = &*r.elem else {
        return None;
    };
    let last = p.path.segments.last()?;
    if last.ident != "State" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        syn::GenericArgument::Type(t) if args.args.len() == 1 => Some(t.clone()),
        _ => None,
    }
}

/// Checks the signature; returns the input type and, for a stateful node, the state type.
fn parse_signature(
    cx: &mut Ctxt,
    sig: &syn::Signature,
    stateful: bool,
) -> (Option<syn::Type>, Option<syn::Type>) {
    let input = parse_input(cx, sig, stateful);
    if !stateful {
        return (input, None);
    }
    let name = &sig.ident;
    let state = match sig.inputs.iter().nth(1) {
        Some(syn::FnArg::Typed(pat)) => match state_param(&pat.ty) {
            Some(t) => Some(t),
            None => {
                cx.error_spanned_by(
                    &pat.ty,
                    format!("the state of node `{name}` is taken as `&mut nanoflow::State<T>`, e.g. `state: &mut State<u64>`"),
                );
                None
            }
        },
        _ => {
            cx.error_at(
                sig.paren_token.span.join(),
                format!("node `{name}` has `state`: take it as a second parameter, e.g. `fn {name}(input: In, state: &mut State<u64>)`"),
            );
            None
        }
    };
    (input, state)
}

/// Checks the signature and returns the input type.
fn parse_input(cx: &mut Ctxt, sig: &syn::Signature, stateful: bool) -> Option<syn::Type> {
    let name = &sig.ident;
    if let Some(token) = &sig.constness {
        cx.error_spanned_by(
            token,
            format!("node `{name}` cannot be a `const fn`; remove `const`"),
        );
    }
    if let Some(token) = &sig.unsafety {
        cx.error_spanned_by(
            token,
            format!("node `{name}` cannot be an `unsafe fn`; call unsafe code inside a safe function instead"),
        );
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned_by(
            abi,
            format!("node `{name}` cannot have an `extern` ABI; remove it"),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let span: &dyn quote::ToTokens = if sig.generics.params.is_empty() {
            &sig.generics.where_clause
        } else {
            &sig.generics
        };
        cx.error_spanned_by(
            span,
            format!("node `{name}` cannot be generic: a node has one concrete input type and one concrete output type"),
        );
    }
    if let Some(variadic) = &sig.variadic {
        cx.error_spanned_by(variadic, format!("node `{name}` cannot be variadic"));
    }

    let inputs = sig.inputs.len() - usize::from(stateful && sig.inputs.len() == 2);
    if !stateful && sig.inputs.len() == 2 {
        if let Some(syn::FnArg::Typed(pat)) = sig.inputs.iter().nth(1) {
            if state_param(&pat.ty).is_some() {
                cx.error_spanned_by(
                    &pat.ty,
                    format!("node `{name}` takes a state: declare it with `#[node(state, key = field)]`"),
                );
                return None;
            }
        }
    }
    match inputs {
        0 => {
            cx.error_at(
                sig.paren_token.span.join(),
                format!(
                    "node `{name}` takes no input; a node takes exactly one, e.g. `fn {name}(input: MyInput)` (or `fn {name}(_: ())` for none)"
                ),
            );
            return None;
        }
        1 => {}
        n => {
            cx.error_spanned_by(
                &sig.inputs,
                format!(
                    "node `{name}` takes {n} inputs; a node takes exactly one: take a tuple instead, e.g. `fn {name}(inputs: (A, B))`"
                ),
            );
            return None;
        }
    }
    match sig.inputs.first()? {
        syn::FnArg::Receiver(r) => {
            cx.error_spanned_by(
                r,
                format!(
                    "node `{name}` cannot take `self`: a node is a free function with one input"
                ),
            );
            None
        }
        syn::FnArg::Typed(pat) => {
            check_owned(cx, &pat.ty);
            Some((*pat.ty).clone())
        }
    }
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

/// Parses every option, reporting each bad one and going on with the next.
fn parse_options(cx: &mut Ctxt, attr: TokenStream) -> Options {
    let mut options = Options::default();
    let mut seen: Vec<String> = Vec::new();
    let mut backoff_ns: Option<u64> = None;
    let parser = syn::meta::parser(|meta| {
        let key = match meta.path.get_ident() {
            Some(ident) => ident.to_string(),
            None if meta.path.is_ident("crate") => "crate".to_owned(),
            None => {
                let path = &meta.path;
                let shown = quote::quote!(#path).to_string().replace(' ', "");
                cx.error_spanned_by(
                    path,
                    format!("unknown `#[node]` option `{shown}`; expected {OPTIONS}"),
                );
                return skip_value(&meta);
            }
        };
        if seen.contains(&key) {
            cx.error_spanned_by(&meta.path, format!("`{key}` specified more than once"));
            return skip_value(&meta);
        }
        seen.push(key.clone());
        if let Err(e) = parse_option(&meta, &key, &mut options) {
            cx.push(e);
            return skip_value(&meta);
        }
        if key == "backoff" {
            backoff_ns = options.backoff_ns;
        }
        Ok(())
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, attr) {
        cx.push(e);
    }
    if let (Some(b), Some((m, span))) = (backoff_ns, options.max_backoff_ns) {
        if m < b {
            cx.error_at(span, "`max_backoff` must not be shorter than `backoff`");
        }
    }
    options
}

/// After a bad option: skips what is left of it, up to the next `,`.
pub(crate) fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    meta.input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            if matches!(&tt, proc_macro2::TokenTree::Punct(p) if p.as_char() == ',') {
                break;
            }
            rest = next;
        }
        Ok(((), rest))
    })
}

fn parse_option(meta: &ParseNestedMeta<'_>, key: &str, options: &mut Options) -> syn::Result<()> {
    match key {
        "retries" => {
            let expr: syn::Expr = value(meta, key, "3")?.parse()?;
            options.retries = Some(parse_retries(&expr)?);
        }
        "backoff" | "max_backoff" | "timeout" => {
            let lit = string(meta, key, "\"2s\"")?;
            let nanos =
                duration::parse(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))?;
            if nanos == 0 && key == "timeout" {
                return Err(syn::Error::new(
                    lit.span(),
                    "`timeout` must be longer than zero",
                ));
            }
            match key {
                "backoff" => options.backoff_ns = Some(nanos),
                "max_backoff" => options.max_backoff_ns = Some((nanos, lit.span())),
                _ => options.timeout_ns = Some(nanos),
            }
        }
        "isolation" => {
            let lit = string(meta, key, "\"container\"")?;
            let value = lit.value();
            if value != "process" && value != "container" {
                return Err(syn::Error::new(
                    lit.span(),
                    format!("unknown isolation `{value}`; expected \"process\" or \"container\""),
                ));
            }
            options.isolation = Some((value, lit.span()));
        }
        "name" => {
            let lit = string(meta, key, "\"charge-card\"")?;
            let value = lit.value();
            let valid = !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(syn::Error::new(
                    lit.span(),
                    format!("invalid node name `{value}`; use only letters, digits, `_` and `-`"),
                ));
            }
            options.name = Some(value);
        }
        "memory" => {
            let lit = string(meta, key, "\"128MiB\"")?;
            options.memory =
                Some(parse_memory(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))?);
        }
        "cpus" => {
            let lit: syn::Lit = value(meta, key, "0.5")?.parse()?;
            let cpus = match &lit {
                syn::Lit::Float(f) => f.base10_parse::<f64>().ok(),
                syn::Lit::Int(i) => i.base10_parse::<f64>().ok(),
                _ => None,
            };
            match cpus {
                Some(c) if c > 0.0 && c <= 1024.0 => {
                    options.cpu_millis = Some((c * 1000.0).round() as u32)
                }
                _ => {
                    return Err(syn::Error::new(
                        lit.span(),
                        "`cpus` must be a number of CPUs above 0, e.g. `cpus = 0.5`",
                    ))
                }
            }
        }
        "pure" => {
            if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                return Err(meta.error("`pure` takes no value: write `#[node(pure)]`"));
            }
            options.pure = Some(
                meta.path
                    .get_ident()
                    .map(|i| i.span())
                    .unwrap_or_else(proc_macro2::Span::call_site),
            );
        }
        "state" => {
            if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                return Err(meta.error("`state` takes no value: write `state, key = field`"));
            }
            options.state = Some(
                meta.path
                    .get_ident()
                    .map(|i| i.span())
                    .unwrap_or_else(proc_macro2::Span::call_site),
            );
        }
        "key" => {
            let input = value(meta, key, "customer")?;
            let (members, span) = if input.peek(syn::LitStr) {
                let lit: syn::LitStr = input.parse()?;
                let members = lit
                    .value()
                    .split('.')
                    .map(|part| syn::parse_str::<syn::Member>(part.trim()))
                    .collect::<syn::Result<Vec<_>>>()
                    .map_err(|_| {
                        syn::Error::new(
                            lit.span(),
                            format!("invalid field path `{}`; e.g. \"customer.id\"", lit.value()),
                        )
                    })?;
                (members, lit.span())
            } else {
                let member: syn::Member = input.parse().map_err(|e| {
                    syn::Error::new(e.span(), "`key` names a field of the input, e.g. `key = customer` or `key = \"customer.id\"`")
                })?;
                let span = syn::spanned::Spanned::span(&member);
                (vec![member], span)
            };
            options.key = Some((members, span));
        }
        "schema" => {
            if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                return Err(meta.error(
                    "`schema` takes no value: write `#[node(schema)]` to require JSON Schemas",
                ));
            }
            options.schema = true;
        }
        "crate" => {
            let value = value(meta, key, "my_nanoflow")?;
            options.krate = Some(if value.peek(syn::LitStr) {
                value.parse::<syn::LitStr>()?.parse()?
            } else {
                value.parse::<syn::Path>().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "`crate` takes a path to the `nanoflow` crate, e.g. `crate = my_nanoflow`",
                    )
                })?
            });
        }
        other => {
            return Err(meta.error(format!(
                "unknown `#[node]` option `{other}`; expected {OPTIONS}"
            )));
        }
    }
    Ok(())
}

/// `key = ...`: the stream after `=`, or an error showing the expected form.
fn value<'a>(
    meta: &'a ParseNestedMeta<'_>,
    key: &str,
    example: &str,
) -> syn::Result<syn::parse::ParseStream<'a>> {
    meta.value()
        .map_err(|_| meta.error(format!("`{key}` needs a value, e.g. `{key} = {example}`")))
}

/// `key = "..."`.
fn string(meta: &ParseNestedMeta<'_>, key: &str, example: &str) -> syn::Result<syn::LitStr> {
    let input = value(meta, key, example)?;
    let expr: syn::Expr = input.parse()?;
    match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => Ok(lit),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{key}` takes a string, e.g. `{key} = {example}`"),
        )),
    }
}

fn parse_retries(expr: &syn::Expr) -> syn::Result<u32> {
    const RANGE: &str = "`retries` must be a whole number from 0 to 4294967295, e.g. `retries = 3`";
    match expr {
        syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Int(lit), .. }) => {
            lit.base10_parse::<u32>().map_err(|_| syn::Error::new(lit.span(), RANGE))
        }
        syn::Expr::Unary(syn::ExprUnary { op: syn::UnOp::Neg(_), expr: inner, .. })
            if matches!(&**inner, syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Int(_), .. })) =>
        {
            Err(syn::Error::new_spanned(
                expr,
                "`retries` cannot be negative: it counts the attempts after the first one (0 for none)",
            ))
        }
        other => Err(syn::Error::new_spanned(other, RANGE)),
    }
}

/// `"128MiB"`, `"1GiB"`, `"512MB"`, `"65536"` (bytes; the size rule of `nanoflow-rules`): at
/// least 6 MiB, Docker's minimum.
fn parse_memory(text: &str) -> Result<u64, String> {
    let bytes = nanoflow_rules::parse_size(text).map_err(|e| format!("invalid memory {e}"))?;
    if bytes < 6 << 20 {
        return Err(format!(
            "memory size `{text}` is below the 6 MiB a container needs"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use quote::quote;

    fn errors(attr: proc_macro2::TokenStream, func: proc_macro2::TokenStream) -> Vec<String> {
        let func: syn::ItemFn = syn::parse2(func).unwrap();
        super::parse(attr, &func)
            .errors
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn accepts_every_option() {
        let func: syn::ItemFn = syn::parse2(quote!(
            fn f(x: u32) -> u32 {
                x
            }
        ))
        .unwrap();
        let parsed = super::parse(
            quote!(
                retries = 3,
                backoff = "50ms",
                max_backoff = "1s",
                timeout = "2s",
                isolation = "container",
                name = "f-1",
                crate = my::nf
            ),
            &func,
        );
        assert!(parsed.errors.is_empty());
        let node = parsed.node.unwrap();
        assert_eq!(node.options.retries, Some(3));
        assert_eq!(node.options.timeout_ns, Some(2_000_000_000));
        assert_eq!(node.options.name.as_deref(), Some("f-1"));
        assert!(parsed.krate.is_some());
    }

    #[test]
    fn collects_every_bad_option() {
        let e = errors(
            quote!(
                retires = 3,
                timeout = "2 parsecs",
                retries = -1,
                isolation = "vm",
                timeout = "1s"
            ),
            quote!(
                fn f(x: u32) -> u32 {
                    x
                }
            ),
        );
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(
            e[0].starts_with("unknown `#[node]` option `retires`"),
            "{e:?}"
        );
        assert!(e[1].contains("unknown unit `parsecs`"), "{e:?}");
        assert!(e[2].contains("cannot be negative"), "{e:?}");
        assert!(e[3].contains("unknown isolation `vm`"), "{e:?}");
        assert_eq!(e[4], "`timeout` specified more than once");
    }

    #[test]
    fn bad_options_still_give_a_node() {
        let func: syn::ItemFn = syn::parse2(quote!(
            fn f(x: u32) -> u32 {
                x
            }
        ))
        .unwrap();
        let parsed = super::parse(quote!(timeout = 2), &func);
        assert!(parsed.node.is_some());
        assert_eq!(
            parsed.errors[0].to_string(),
            "`timeout` takes a string, e.g. `timeout = \"2s\"`"
        );
    }

    #[test]
    fn max_backoff_shorter_than_backoff() {
        let e = errors(
            quote!(backoff = "2s", max_backoff = "1s"),
            quote!(
                fn f(x: u32) {}
            ),
        );
        assert_eq!(e, ["`max_backoff` must not be shorter than `backoff`"]);
    }

    #[test]
    fn signatures() {
        let no_options = proc_macro2::TokenStream::new;
        assert!(errors(
            no_options(),
            quote!(
                fn f() {}
            )
        )[0]
        .contains("takes no input"));
        assert!(errors(
            no_options(),
            quote!(
                fn f(a: u8, b: u8) {}
            )
        )[0]
        .contains("takes 2 inputs"));
        assert!(errors(
            no_options(),
            quote!(
                fn f(self) {}
            )
        )[0]
        .contains("cannot take `self`"));
        assert!(errors(
            no_options(),
            quote!(
                fn f<T>(t: T) {}
            )
        )[0]
        .contains("cannot be generic"));
        assert!(errors(
            no_options(),
            quote!(
                fn f(t: T)
                where
                    T: Copy,
                {
                }
            )
        )[0]
        .contains("cannot be generic"));
        assert!(errors(
            no_options(),
            quote!(
                fn f(t: &str) {}
            )
        )[0]
        .contains("owned type"));
        assert!(errors(
            no_options(),
            quote!(
                fn f(t: impl Copy) {}
            )
        )[0]
        .contains("not `impl Trait`"));
        assert!(errors(
            no_options(),
            quote!(
                const fn f(t: u8) {}
            )
        )[0]
        .contains("`const fn`"));
        assert!(errors(
            no_options(),
            quote!(
                unsafe fn f(t: u8) {}
            )
        )[0]
        .contains("`unsafe fn`"));
        assert!(errors(
            no_options(),
            quote!(
                extern "C" fn f(t: u8) {}
            )
        )[0]
        .contains("`extern` ABI"));
        assert!(errors(
            no_options(),
            quote!(
                async fn f(t: u8) -> Result<u8> {
                    Ok(t)
                }
            )
        )
        .is_empty());
    }

    #[test]
    fn signature_errors_leave_no_node() {
        let func: syn::ItemFn = syn::parse2(quote!(
            fn f(a: u8, b: u8) {}
        ))
        .unwrap();
        assert!(super::parse(quote!(), &func).node.is_none());
    }
}
