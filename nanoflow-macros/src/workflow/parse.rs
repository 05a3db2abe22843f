//! Parses `workflow! { ... }` into our own tree.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{token, Token};

use syn::punctuated::Punctuated;

use super::ast::{
    Arm, Chain, Compensation, Defaults, FieldPat, FieldPath, Fields, If, Limit, Limits, Map,
    MapOption, Match, NodeRef, Pattern, Signal, Sleep, Stage, WorkflowDecl, WorkflowFile,
};
use crate::trigger;

impl Parse for WorkflowFile {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut krate = None;
        let mut errors = Vec::new();
        while input.peek(Token![#]) && input.peek2(Token![!]) {
            input.parse::<Token![#]>()?;
            input.parse::<Token![!]>()?;
            let content;
            syn::bracketed!(content in input);
            match parse_crate_attr(&content) {
                Ok(path) => krate = Some(path),
                Err(e) => {
                    errors.push(e);
                    // The rest of the attribute is skipped (syn would report it as unexpected).
                    let _ = content.parse::<proc_macro2::TokenStream>();
                }
            }
        }
        let mut workflows = Vec::new();
        if input.is_empty() {
            errors.push(syn::Error::new(
                Span::call_site(),
                "`workflow!` declares no workflow; write e.g. `workflow! { pub checkout: price -> total; }`",
            ));
        }
        while !input.is_empty() {
            if let Some(decl) = parse_decl(input, &mut errors) {
                workflows.push(decl);
            }
        }
        Ok(WorkflowFile {
            krate,
            workflows,
            errors,
        })
    }
}

/// `#![crate = path]`.
fn parse_crate_attr(content: ParseStream<'_>) -> syn::Result<syn::Path> {
    const ONLY: &str = "the only inner attribute of `workflow!` is `#![crate = path]`";
    content
        .parse::<Token![crate]>()
        .map_err(|e| syn::Error::new(e.span(), ONLY))?;
    content
        .parse::<Token![=]>()
        .map_err(|e| syn::Error::new(e.span(), ONLY))?;
    let path = content.parse::<syn::Path>()?;
    if !content.is_empty() {
        return Err(content.error(ONLY));
    }
    Ok(path)
}

/// One `/// doc  #[trigger(..)]  pub name: graph;`. A syntax error is recorded and the rest of the
/// declaration skipped, so the following workflows are still read (and, once the name is known,
/// the workflow is still declared: uses of its name add no errors).
fn parse_decl(input: ParseStream<'_>, errors: &mut Vec<syn::Error>) -> Option<WorkflowDecl> {
    let attrs = match input.call(syn::Attribute::parse_outer) {
        Ok(attrs) => attrs,
        Err(e) => {
            errors.push(e);
            skip_past_semicolon(input);
            return None;
        }
    };
    let vis: syn::Visibility = match input.parse() {
        Ok(vis) => vis,
        Err(e) => {
            errors.push(e);
            skip_past_semicolon(input);
            return None;
        }
    };
    let name: syn::Ident = match input.parse() {
        Ok(name) => name,
        Err(e) => {
            errors.push(syn::Error::new(
                e.span(),
                "expected a workflow name, as in `pub checkout: price -> total;`",
            ));
            skip_past_semicolon(input);
            return None;
        }
    };
    let mut decl = WorkflowDecl {
        docs: Vec::new(),
        triggers: Vec::new(),
        defaults: Defaults::default(),
        compensations: Vec::new(),
        finishes: None,
        limits: Limits::default(),
        timeout: None,
        vis,
        name,
        colon: Span::call_site(),
        graph: None,
        errors: Vec::new(),
    };
    parse_attrs(&mut decl, attrs);
    let name = &decl.name;
    match input.parse::<Token![:]>() {
        Ok(colon) => decl.colon = colon.span,
        Err(e) => {
            let message = format!(
                "expected `:` after the workflow name `{name}`, as in `{name}: price -> total;`"
            );
            decl.errors.push(syn::Error::new(e.span(), message));
            skip_past_semicolon(input);
            return Some(decl);
        }
    }
    let graph = if input.peek(Token![;]) {
        Ok(Chain { stages: Vec::new() })
    } else {
        input.parse()
    };
    match graph {
        Ok(mut graph) => {
            graph.name_sleeps(&mut 0);
            decl.graph = Some(graph)
        }
        Err(e) => {
            decl.errors.push(e);
            skip_past_semicolon(input);
            return Some(decl);
        }
    }
    if input.parse::<Token![;]>().is_err() {
        let next_decl = input.is_empty()
            || input.peek(Token![pub])
            || input.peek(Token![#])
            || (input.peek(syn::Ident) && input.peek2(Token![:]) && !input.peek2(Token![::]));
        if next_decl {
            // A missing `;`: report it after the graph, and read what follows as the next workflow.
            let end = decl
                .graph
                .as_ref()
                .and_then(Chain::end_span)
                .unwrap_or_else(|| input.span());
            decl.errors.push(syn::Error::new(
                end,
                format!("expected `;` after the graph of workflow `{name}`"),
            ));
        } else {
            decl.errors.push(input.error(format!(
                "expected `->` or `;` in the graph of workflow `{name}`"
            )));
            decl.graph = None;
            skip_past_semicolon(input);
        }
    }
    Some(decl)
}

/// Doc comments and `#[trigger(...)]`; a bad one is reported, the others kept.
fn parse_attrs(decl: &mut WorkflowDecl, attrs: Vec<syn::Attribute>) {
    for attr in attrs {
        if attr.path().is_ident("doc") {
            decl.docs.push(attr);
        } else if attr.path().is_ident("trigger") {
            match trigger::parse::parse(&attr) {
                Ok(t) => decl.triggers.push(t),
                Err(e) => decl.errors.push(e),
            }
        } else if attr.path().is_ident("defaults") {
            if let Err(e) = parse_defaults(&attr, &mut decl.defaults) {
                decl.errors.push(e);
            }
        } else if attr.path().is_ident("compensate") {
            match attr.parse_args_with(Punctuated::<CompensationPair, Token![,]>::parse_terminated) {
                Ok(pairs) => decl.compensations.extend(pairs.into_iter().map(|p| Compensation { step: p.step, node: p.node })),
                Err(e) => decl.errors.push(syn::Error::new(
                    e.span(),
                    format!("{e}; write `#[compensate(step => undo_node, ...)]`, e.g. `#[compensate(charge => refund)]`"),
                )),
            }
        } else if attr.path().is_ident("finishes") {
            if decl.finishes.is_some() {
                decl.errors.push(syn::Error::new_spanned(
                    attr.path(),
                    "`#[finishes(..)]` specified more than once",
                ));
                continue;
            }
            match attr.parse_args_with(syn::Path::parse_mod_style) {
                Ok(path) => decl.finishes = Some(path),
                Err(e) => decl.errors.push(syn::Error::new(
                    e.span(),
                    format!("{e}; write `#[finishes(workflow)]`, e.g. `#[finishes(checkout)]`"),
                )),
            }
        } else if attr.path().is_ident("limit") {
            parse_limit(&attr, &mut decl.limits, &mut decl.errors);
        } else if attr.path().is_ident("timeout") {
            if let Err(e) = parse_timeout(&attr, &mut decl.timeout) {
                decl.errors.push(e);
            }
        } else {
            decl.errors.push(syn::Error::new_spanned(
                attr.path(),
                "unsupported attribute on a workflow; expected doc comments, `#[trigger(...)]`, `#[defaults(...)]`, `#[compensate(...)]`, `#[finishes(...)]`, `#[limit(...)]` or `#[timeout(...)]`",
            ));
        }
    }
}

const LIMIT_OPTIONS: &str = "expected `concurrency = 2`, `rate = \"100/s\"`, `debounce = \"2s\"`, `key = field` or `priority = field`";

/// One `#[limit(..)]`, merged into `limits`: each limit, the key and the priority at most once
/// per workflow (the key may be repeated, the same).
fn parse_limit(attr: &syn::Attribute, limits: &mut Limits, errors: &mut Vec<syn::Error>) {
    if matches!(attr.meta, syn::Meta::Path(_)) {
        errors.push(syn::Error::new_spanned(
            attr.path(),
            format!("`#[limit]` needs options in parentheses; {LIMIT_OPTIONS}, as in `#[limit(concurrency = 2)]`"),
        ));
        return;
    }
    let mut any = false;
    let result = attr.parse_nested_meta(|meta| {
        any = true;
        let key = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        if let Err(e) = parse_limit_option(&meta, &key, limits) {
            errors.push(e);
            let _ = crate::node::parse::skip_value(&meta);
        }
        Ok(())
    });
    if let Err(e) = result {
        errors.push(e);
    } else if !any {
        errors.push(syn::Error::new_spanned(
            attr,
            format!("`#[limit()]` declares no limit; {LIMIT_OPTIONS}"),
        ));
    }
}

fn parse_limit_option(
    meta: &syn::meta::ParseNestedMeta<'_>,
    key: &str,
    limits: &mut Limits,
) -> syn::Result<()> {
    let example = match key {
        "concurrency" => "concurrency = 2",
        "rate" => "rate = \"100/s\"",
        "debounce" => "debounce = \"2s\"",
        "key" => "key = customer",
        "priority" => "priority = tier",
        _ => {
            let path = &meta.path;
            let shown = quote::quote!(#path).to_string().replace(' ', "");
            return Err(meta.error(format!(
                "unknown `#[limit]` option `{shown}`; {LIMIT_OPTIONS}"
            )));
        }
    };
    let span = syn::spanned::Spanned::span(&meta.path);
    let input = meta
        .value()
        .map_err(|_| meta.error(format!("`{key}` needs a value, as in `{example}`")))?;
    let limit = match key {
        "concurrency" => {
            let expr: syn::Expr = input.parse()?;
            let n = match &expr {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Int(n),
                    ..
                }) => n.base10_parse::<u32>().ok().filter(|n| *n > 0),
                _ => None,
            };
            let n = n.ok_or_else(|| {
                syn::Error::new_spanned(
                    &expr,
                    "`concurrency` takes a whole number of runs from 1, as in `concurrency = 2`",
                )
            })?;
            Limit::Concurrency(n)
        }
        "rate" => {
            let lit = limit_string(input, key, example)?;
            let (count, per) = nanoflow_rules::parse_rate(&lit.value())
                .map_err(|e| syn::Error::new(lit.span(), e))?;
            let per_ns = u64::try_from(per.as_nanos())
                .map_err(|_| syn::Error::new(lit.span(), "the rate's period is too long"))?;
            Limit::Rate { count, per_ns }
        }
        "debounce" => {
            let lit = limit_string(input, key, example)?;
            let ns =
                crate::duration::parse(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))?;
            if ns == 0 {
                return Err(syn::Error::new(
                    lit.span(),
                    "`debounce` must be longer than zero, as in `debounce = \"2s\"`",
                ));
            }
            Limit::Debounce(ns)
        }
        _ => {
            let path = parse_field_path(input, key)?;
            let slot = if key == "key" {
                &mut limits.key
            } else {
                &mut limits.priority
            };
            match slot {
                None => *slot = Some(path),
                Some(before) if key == "key" && before.parts() == path.parts() => {}
                Some(before) if key == "key" => {
                    return Err(syn::Error::new(
                        path.span,
                        format!(
                            "a workflow's limits share one key, and `key = {}` was given before; write `key = {}` here too",
                            before.parts().join("."),
                            before.parts().join("."),
                        ),
                    ))
                }
                Some(_) => return Err(syn::Error::new(span, "`priority` specified more than once")),
            }
            return Ok(());
        }
    };
    if limits.limits.iter().any(|(l, _)| l.option() == key) {
        return Err(syn::Error::new(
            span,
            format!("`{key}` specified more than once"),
        ));
    }
    limits.limits.push((limit, span));
    Ok(())
}

/// `rate = "100/s"`: the string.
fn limit_string(input: ParseStream<'_>, key: &str, example: &str) -> syn::Result<syn::LitStr> {
    let expr: syn::Expr = input.parse()?;
    match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => Ok(lit),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{key}` takes a string, as in `{example}`"),
        )),
    }
}

/// `key = customer` or `key = "customer.id"` (as `#[node(state, key = ..)]`): the members carry
/// the user's token, so that a missing field is reported there.
fn parse_field_path(input: ParseStream<'_>, key: &str) -> syn::Result<FieldPath> {
    let expected = format!("`{key}` names a field of the workflow's input, as in `{key} = customer` or `{key} = \"customer.id\"`");
    if input.peek(syn::LitStr) {
        let lit: syn::LitStr = input.parse()?;
        let members = lit
            .value()
            .split('.')
            .map(|part| syn::parse_str::<syn::Member>(part.trim()))
            .collect::<syn::Result<Vec<_>>>()
            .map_err(|_| {
                syn::Error::new(
                    lit.span(),
                    format!("invalid field path `{}`; {expected}", lit.value()),
                )
            })?;
        let members = members
            .into_iter()
            .map(|m| match m {
                syn::Member::Named(mut i) => {
                    i.set_span(lit.span());
                    syn::Member::Named(i)
                }
                syn::Member::Unnamed(mut i) => {
                    i.span = lit.span();
                    syn::Member::Unnamed(i)
                }
            })
            .collect();
        return Ok(FieldPath {
            members,
            span: lit.span(),
        });
    }
    let member: syn::Member = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), &expected))?;
    let span = syn::spanned::Spanned::span(&member);
    Ok(FieldPath {
        members: vec![member],
        span,
    })
}

/// `#[timeout("1h")]`: the whole run's time limit.
fn parse_timeout(attr: &syn::Attribute, timeout: &mut Option<(u64, Span)>) -> syn::Result<()> {
    const FORM: &str =
        "`#[timeout(..)]` takes the whole run's time limit, as in `#[timeout(\"1h\")]`";
    if timeout.is_some() {
        return Err(syn::Error::new_spanned(
            attr.path(),
            "`#[timeout(..)]` specified more than once",
        ));
    }
    let lit: syn::LitStr = attr
        .parse_args()
        .map_err(|e| syn::Error::new(e.span(), FORM))?;
    let ns = crate::duration::parse(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))?;
    if ns == 0 {
        return Err(syn::Error::new(
            lit.span(),
            "`timeout` must be longer than zero",
        ));
    }
    *timeout = Some((ns, lit.span()));
    Ok(())
}

struct CompensationPair {
    step: syn::Ident,
    node: syn::Path,
}

impl Parse for CompensationPair {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let step = input.parse()?;
        input.parse::<Token![=>]>()?;
        let node = input.call(syn::Path::parse_mod_style)?;
        Ok(Self { step, node })
    }
}

/// `#[defaults(retries = 2, backoff = "50ms", max_backoff = "5s", timeout = "2s")]`.
fn parse_defaults(attr: &syn::Attribute, defaults: &mut Defaults) -> syn::Result<()> {
    let mut errors: Option<syn::Error> = None;
    let mut seen: Vec<String> = Vec::new();
    attr.parse_nested_meta(|meta| {
        let key = meta.path.get_ident().map(ToString::to_string).unwrap_or_default();
        let result = (|| {
            if seen.contains(&key) {
                return Err(meta.error(format!("`{key}` specified more than once")));
            }
            seen.push(key.clone());
            match key.as_str() {
                "retries" => {
                    let lit: syn::LitInt = meta.value()?.parse()?;
                    defaults.retries = Some(lit.base10_parse().map_err(|_| {
                        syn::Error::new(lit.span(), "`retries` must be a whole number from 0 to 4294967295")
                    })?);
                }
                "backoff" | "max_backoff" | "timeout" => {
                    let lit: syn::LitStr = meta.value()?.parse()?;
                    let ns = crate::duration::parse(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))?;
                    if ns == 0 && key == "timeout" {
                        return Err(syn::Error::new(lit.span(), "`timeout` must be longer than zero"));
                    }
                    match key.as_str() {
                        "backoff" => defaults.backoff_ns = Some(ns),
                        "max_backoff" => defaults.max_backoff_ns = Some(ns),
                        _ => defaults.timeout_ns = Some(ns),
                    }
                }
                _ => {
                    return Err(meta.error(format!(
                        "unknown workflow default `{key}`; expected `retries`, `backoff`, `max_backoff` or `timeout`"
                    )))
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            match &mut errors {
                Some(all) => all.combine(e),
                None => errors = Some(e),
            }
            // Skip the rest of this entry.
            let _ = crate::node::parse::skip_value(&meta);
        }
        Ok(())
    })?;
    errors.map_or(Ok(()), Err)
}

/// After a syntax error: skips to just past the next top-level `;` (or to the end).
fn skip_past_semicolon(input: ParseStream<'_>) {
    let _ = input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            rest = next;
            if matches!(&tt, proc_macro2::TokenTree::Punct(p) if p.as_char() == ';') {
                break;
            }
        }
        Ok(((), rest))
    });
}

impl Parse for Chain {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut stages = vec![input.parse()?];
        while input.peek(Token![->]) {
            input.parse::<Token![->]>()?;
            stages.push(input.parse()?);
        }
        Ok(Chain { stages })
    }
}

impl Parse for Stage {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(token::Paren) {
            let content;
            let paren = syn::parenthesized!(content in input);
            let branches = within(&content, |c| c.parse_terminated(Chain::parse, Token![,]))?;
            return Ok(Stage::Group {
                paren: paren.span.join(),
                branches: branches.into_iter().collect(),
            });
        }
        if input.peek(Token![match]) {
            return parse_match(input).map(Stage::Match);
        }
        if input.peek(Token![if]) {
            return parse_if(input).map(Stage::If);
        }
        if input.peek(syn::Ident) && input.peek2(token::Paren) {
            let fork = input.fork();
            let keyword = fork.parse::<syn::Ident>()?;
            if keyword == "map" {
                return parse_map(input).map(Stage::Map);
            }
            if keyword == "signal" {
                return parse_signal(input).map(Stage::Signal);
            }
            if keyword == "sleep" {
                return parse_sleep(input).map(Stage::Sleep);
            }
        }
        if input.peek(syn::Ident)
            || input.peek(Token![::])
            || input.peek(Token![crate])
            || input.peek(Token![self])
            || input.peek(Token![super])
        {
            return input.parse().map(Stage::Node);
        }
        Err(input.error(
            "expected a node name, `(` to start parallel branches, `match`, `if`, `map(..)`, `signal(..)` or `sleep(..)`",
        ))
    }
}

impl Parse for NodeRef {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let path = input.call(syn::Path::parse_mod_style)?;
        let alias = if input.peek(Token![as]) {
            input.parse::<Token![as]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(NodeRef { path, alias })
    }
}

/// Parses the delimited `content` with `parse`; after an error, skips the rest of `content`,
/// so that the error is the one reported (syn would otherwise report the tokens left over
/// instead, and fail the whole `workflow!`).
fn within<T>(
    content: ParseStream<'_>,
    parse: impl FnOnce(ParseStream<'_>) -> syn::Result<T>,
) -> syn::Result<T> {
    let result = parse(content);
    if result.is_err() {
        let _ = content.parse::<proc_macro2::TokenStream>();
    }
    result
}

/// A chain inside `{ .. }` (a branch of an `if`), which must hold nothing else.
fn braced_chain(input: ParseStream<'_>, what: &str) -> syn::Result<Chain> {
    let content;
    let brace = syn::braced!(content in input);
    within(&content, |content| {
        if content.is_empty() {
            return Err(syn::Error::new(
                brace.span.join(),
                format!(
                    "empty {what}; write the steps it runs, as in `{{ manual_review -> approve }}`"
                ),
            ));
        }
        let chain: Chain = content.parse()?;
        if !content.is_empty() {
            return Err(content.error(format!("expected `->` or the end of the {what}")));
        }
        Ok(chain)
    })
}

/// `match { Pattern => chain, .. }`.
fn parse_match(input: ParseStream<'_>) -> syn::Result<Match> {
    let keyword = input.parse::<Token![match]>()?.span;
    if !input.peek(token::Brace) {
        return Err(input.error(
            "expected `{` after `match`: a `match` matches the previous step's output, as in `review -> match { Approved(a) => ship, Rejected(r) => refund }`",
        ));
    }
    let content;
    let brace = syn::braced!(content in input);
    let arms = within(&content, |content| {
        let mut arms = Vec::new();
        while !content.is_empty() {
            let pattern: Pattern = content.parse()?;
            content.parse::<Token![=>]>().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected `=>` after the pattern, as in `Approved(a) => ship`",
                )
            })?;
            let body: Chain = content.parse()?;
            arms.push(Arm { pattern, body });
            if content.is_empty() {
                break;
            }
            content.parse::<Token![,]>().map_err(|e| {
                syn::Error::new(e.span(), "expected `,` or `->` after the steps of this arm")
            })?;
        }
        Ok(arms)
    })?;
    Ok(Match {
        keyword,
        brace: brace.span.join(),
        arms,
    })
}

const PATTERN: &str =
    "expected a variant pattern, as in `Approved(a)`, `Pending`, `Moved { to, .. }` or `_`";

impl Parse for Pattern {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(Token![_]) {
            return Ok(Pattern::Wild(input.parse::<Token![_]>()?.span));
        }
        if !(input.peek(syn::Ident)
            || input.peek(Token![::])
            || input.peek(Token![crate])
            || input.peek(Token![self])
            || input.peek(Token![super])
            || input.peek(Token![Self]))
        {
            return Err(input.error(PATTERN));
        }
        let path = input
            .call(syn::Path::parse_mod_style)
            .map_err(|e| syn::Error::new(e.span(), PATTERN))?;
        let fields = if input.peek(token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            let items = within(&content, |c| c.parse_terminated(FieldPat::parse, Token![,]))?;
            Fields::Tuple(items.into_iter().collect())
        } else if input.peek(token::Brace) {
            let content;
            syn::braced!(content in input);
            Fields::Struct(within(&content, parse_struct_fields)?)
        } else {
            Fields::Unit
        };
        Ok(Pattern::Variant { path, fields })
    }
}

/// `{ field, field: _, .. }`.
fn parse_struct_fields(content: ParseStream<'_>) -> syn::Result<Vec<(syn::Ident, FieldPat)>> {
    let mut items = Vec::new();
    while !content.is_empty() {
        if content.peek(Token![..]) {
            let span = content.parse::<Token![..]>()?.spans[0];
            items.push((
                syn::Ident::new("__nanoflow_rest", span),
                FieldPat::Rest(span),
            ));
        } else {
            let field: syn::Ident = content.parse()?;
            let pat = if content.peek(Token![:]) {
                content.parse::<Token![:]>()?;
                content.parse()?
            } else {
                FieldPat::Bind(field.clone())
            };
            items.push((field, pat));
        }
        if content.is_empty() {
            break;
        }
        content.parse::<Token![,]>()?;
    }
    Ok(items)
}

impl Parse for FieldPat {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(Token![_]) {
            Ok(FieldPat::Skip(input.parse::<Token![_]>()?.span))
        } else if input.peek(Token![..]) {
            Ok(FieldPat::Rest(input.parse::<Token![..]>()?.spans[0]))
        } else if input.peek(syn::Ident) {
            Ok(FieldPat::Bind(input.parse()?))
        } else {
            Err(input.error(
                "expected a name binding the field, `_` or `..`; the fields bound are what the arm's first step takes",
            ))
        }
    }
}

/// `if cond { chain } else { chain }` or `.. else if ..`.
fn parse_if(input: ParseStream<'_>) -> syn::Result<If> {
    let keyword = input.parse::<Token![if]>()?.span;
    if !(input.peek(syn::Ident)
        || input.peek(Token![::])
        || input.peek(Token![crate])
        || input.peek(Token![self])
        || input.peek(Token![super]))
    {
        return Err(input.error(
            "expected the condition after `if`: a node returning `bool`, as in `if is_large { review } else { approve }`",
        ));
    }
    let cond: NodeRef = input.parse()?;
    if !input.peek(token::Brace) {
        return Err(input.error(
            "expected `{` after the condition, as in `if is_large { review } else { approve }`",
        ));
    }
    let then = braced_chain(input, "`if` branch")?;
    if !input.peek(Token![else]) {
        return Err(syn::Error::new(
            keyword,
            "this `if` has no `else` branch; write one, as in `if is_large { review } else { approve }`: the value goes on through one branch or the other",
        ));
    }
    input.parse::<Token![else]>()?;
    let otherwise = if input.peek(Token![if]) {
        Chain {
            stages: vec![Stage::If(parse_if(input)?)],
        }
    } else if input.peek(token::Brace) {
        braced_chain(input, "`else` branch")?
    } else {
        return Err(input.error("expected `{` or `if` after `else`"));
    };
    Ok(If {
        keyword,
        cond,
        then,
        otherwise,
    })
}

/// `map(chain, option, ..)`.
fn parse_map(input: ParseStream<'_>) -> syn::Result<Map> {
    let keyword: syn::Ident = input.parse()?;
    let content;
    let paren = syn::parenthesized!(content in input);
    let (body, options) = within(&content, |content| {
        if content.is_empty() {
            return Err(syn::Error::new(
                paren.span.join(),
                "empty `map()`; write the step to run for each item, as in `map(score)`",
            ));
        }
        let body: Chain = content.parse()?;
        let mut options = Vec::new();
        while !content.is_empty() {
            content.parse::<Token![,]>().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected `->`, `,` or `)` after the steps of `map(..)`",
                )
            })?;
            if content.is_empty() {
                break;
            }
            let key: syn::Ident = content.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected a `map` option: `concurrency = 8` or `collect_errors`",
                )
            })?;
            let value = if content.peek(Token![=]) {
                content.parse::<Token![=]>()?;
                Some(content.parse()?)
            } else {
                None
            };
            options.push(MapOption { key, value });
        }
        Ok((body, options))
    })?;
    Ok(Map {
        keyword,
        body,
        options,
    })
}

const SIGNAL: &str = "expected `signal(name: Type)` or `signal(name: Type, timeout = \"3d\")`, as in `signal(approval: Approval)`";

/// `signal(name: Type)` or `signal(name: Type, timeout = "3d")`.
fn parse_signal(input: ParseStream<'_>) -> syn::Result<Signal> {
    let keyword: syn::Ident = input.parse()?;
    let content;
    let paren = syn::parenthesized!(content in input);
    let paren = paren.span.join();
    within(&content, |content| {
        if content.is_empty() {
            return Err(syn::Error::new(paren, SIGNAL));
        }
        let name: syn::Ident = content
            .parse()
            .map_err(|e| syn::Error::new(e.span(), SIGNAL))?;
        content
            .parse::<Token![:]>()
            .map_err(|e| syn::Error::new(e.span(), SIGNAL))?;
        let ty: syn::Type = content.parse()?;
        let mut timeout = None;
        while !content.is_empty() {
            content
                .parse::<Token![,]>()
                .map_err(|e| syn::Error::new(e.span(), SIGNAL))?;
            if content.is_empty() {
                break;
            }
            let key: syn::Ident = content
                .parse()
                .map_err(|e| syn::Error::new(e.span(), SIGNAL))?;
            if key != "timeout" {
                return Err(syn::Error::new(
                    key.span(),
                    format!("unknown `signal` option `{key}`; expected `timeout = \"3d\"`"),
                ));
            }
            if timeout.is_some() {
                return Err(syn::Error::new(
                    key.span(),
                    "`timeout` specified more than once",
                ));
            }
            content.parse::<Token![=]>().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "`timeout` needs a value, as in `timeout = \"3d\"`",
                )
            })?;
            let expr: syn::Expr = content.parse()?;
            match expr {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(lit),
                    ..
                }) => timeout = Some(lit),
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "`timeout` takes a string, as in `timeout = \"3d\"`",
                    ))
                }
            }
        }
        Ok(Signal {
            keyword,
            paren,
            name,
            ty,
            timeout,
        })
    })
}

/// `sleep("10m")` or `sleep("10m") as pause`.
fn parse_sleep(input: ParseStream<'_>) -> syn::Result<Sleep> {
    const FORM: &str = "`sleep` takes a duration, as in `sleep(\"10m\")`";
    let keyword: syn::Ident = input.parse()?;
    let content;
    let paren = syn::parenthesized!(content in input);
    let duration = within(&content, |content| {
        if content.is_empty() {
            return Err(syn::Error::new(paren.span.join(), FORM));
        }
        let expr: syn::Expr = content.parse()?;
        let lit = match expr {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(lit),
                ..
            }) => lit,
            other => return Err(syn::Error::new_spanned(other, FORM)),
        };
        if !content.is_empty() {
            return Err(content.error(FORM));
        }
        Ok(lit)
    })?;
    let (name, aliased) = if input.peek(Token![as]) {
        input.parse::<Token![as]>()?;
        (input.parse()?, true)
    } else {
        (syn::Ident::new("sleep", keyword.span()), false)
    };
    Ok(Sleep {
        keyword,
        duration,
        name,
        aliased,
    })
}

#[cfg(test)]
mod tests {
    use super::super::ast::{Stage, WorkflowFile};
    use quote::quote;

    #[test]
    fn parses_nested_graph() {
        let file: WorkflowFile = syn::parse2(quote! {
            /// Docs.
            pub checkout: a -> (b -> c, d as d2) -> e;
            other: x;
        })
        .unwrap();
        assert_eq!(file.workflows.len(), 2);
        let graph = file.workflows[0].graph.as_ref().unwrap();
        assert_eq!(graph.stages.len(), 3);
        match &graph.stages[1] {
            Stage::Group { branches, .. } => {
                assert_eq!(branches.len(), 2);
                assert_eq!(branches[0].stages.len(), 2);
            }
            _ => panic!("expected a group"),
        }
        let mut nodes = Vec::new();
        graph.nodes(&mut nodes);
        let names: Vec<String> = nodes.iter().map(|n| n.step_ident().to_string()).collect();
        assert_eq!(names, ["a", "b", "c", "d2", "e"]);
    }

    /// Syntax errors, each in plain words; a syntax error in one workflow leaves the others read.
    fn parse_errors(tokens: proc_macro2::TokenStream) -> Vec<String> {
        let file: WorkflowFile = syn::parse2(tokens).unwrap();
        let mut all: Vec<String> = file.errors.iter().map(ToString::to_string).collect();
        for wf in &file.workflows {
            all.extend(wf.errors.iter().map(ToString::to_string));
        }
        all
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            parse_errors(quote!(w: a -> ;)),
            ["expected a node name, `(` to start parallel branches, `match`, `if`, `map(..)`, `signal(..)` or `sleep(..)`"]
        );
        assert_eq!(
            parse_errors(quote!()),
            ["`workflow!` declares no workflow; write e.g. `workflow! { pub checkout: price -> total; }`"]
        );
        assert_eq!(
            parse_errors(quote!(w a;)),
            ["expected `:` after the workflow name `w`, as in `w: price -> total;`"]
        );
        assert_eq!(
            parse_errors(quote!(w: a b;)),
            ["expected `->` or `;` in the graph of workflow `w`"]
        );
        assert_eq!(
            parse_errors(quote!(42: a;)),
            ["expected a workflow name, as in `pub checkout: price -> total;`"]
        );
        assert_eq!(
            parse_errors(quote!(#![allow(x)] w: a;)),
            ["the only inner attribute of `workflow!` is `#![crate = path]`"]
        );
    }

    #[test]
    fn recovers_after_a_syntax_error() {
        let file: WorkflowFile = syn::parse2(quote! {
            #[inline]
            first: a -> ;
            second: a
            pub third: b;
            #[trigger(http = 42)]
            fourth: c;
        })
        .unwrap();
        let names: Vec<String> = file.workflows.iter().map(|w| w.name.to_string()).collect();
        assert_eq!(names, ["first", "second", "third", "fourth"]);
        assert_eq!(file.workflows[0].errors.len(), 2);
        assert!(file.workflows[0].is_broken());
        assert_eq!(
            file.workflows[1].errors[0].to_string(),
            "expected `;` after the graph of workflow `second`"
        );
        assert!(!file.workflows[1].is_broken());
        assert!(file.workflows[2].errors.is_empty());
        assert_eq!(
            file.workflows[3].errors[0].to_string(),
            "`http` takes a string, e.g. `http = \"POST /orders\"`"
        );
        assert!(!file.workflows[3].is_broken());
    }

    #[test]
    fn parses_match_if_and_map() {
        let file: WorkflowFile = syn::parse2(quote! {
            w: review -> match {
                Approved(a) => ship -> notify,
                Review::Rejected(r, _) => refund,
                Moved { to, from: _, .. } => (track, log),
                Pending => wait,
                _ => other,
            } -> if big { manual } else if huge { escalate } else { auto }
              -> map(parse -> score, concurrency = 8, collect_errors) -> total;
        })
        .unwrap();
        assert!(file.workflows[0].errors.is_empty());
        let graph = file.workflows[0].graph.as_ref().unwrap();
        assert_eq!(graph.stages.len(), 5);
        let Stage::Match(m) = &graph.stages[1] else {
            panic!("expected a match")
        };
        let labels: Vec<String> = m.arms.iter().map(|a| a.pattern.label()).collect();
        assert_eq!(labels, ["Approved", "Rejected", "Moved", "Pending", "_"]);
        let bound: Vec<Vec<String>> = m
            .arms
            .iter()
            .map(|a| {
                a.pattern
                    .bindings()
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            })
            .collect();
        assert_eq!(
            bound,
            [vec!["a"], vec!["r"], vec!["to"], vec![], vec![]] as [Vec<&str>; 5]
        );
        let Stage::Map(map) = &graph.stages[3] else {
            panic!("expected a map")
        };
        assert_eq!(map.concurrency(), Some(8));
        assert!(map.collect_errors());
        let mut nodes = Vec::new();
        graph.nodes(&mut nodes);
        let names: Vec<String> = nodes.iter().map(|n| n.step_ident().to_string()).collect();
        assert_eq!(
            names,
            [
                "review", "ship", "notify", "refund", "track", "log", "wait", "other", "big",
                "manual", "huge", "escalate", "auto", "parse", "score", "total"
            ]
        );
        // A node named `map` is still a node when not followed by `(`.
        let file: WorkflowFile = syn::parse2(quote!(w: a -> map -> b;)).unwrap();
        let graph = file.workflows[0].graph.as_ref().unwrap();
        assert!(matches!(&graph.stages[1], Stage::Node(n) if n.path.is_ident("map")));
    }

    #[test]
    fn rejects_broken_branches_and_maps() {
        assert_eq!(
            parse_errors(quote!(w: a -> match { Some(x) -> b };)),
            ["expected `=>` after the pattern, as in `Approved(a) => ship`"]
        );
        assert_eq!(
            parse_errors(quote!(w: a -> match { 1 => b };)),
            ["expected a variant pattern, as in `Approved(a)`, `Pending`, `Moved { to, .. }` or `_`"]
        );
        assert_eq!(
            parse_errors(quote!(w: a -> match Review { A => b };)),
            ["expected `{` after `match`: a `match` matches the previous step's output, as in `review -> match { Approved(a) => ship, Rejected(r) => refund }`"]
        );
        assert_eq!(
            parse_errors(quote!(w: if c { a };)),
            ["this `if` has no `else` branch; write one, as in `if is_large { review } else { approve }`: the value goes on through one branch or the other"]
        );
        assert_eq!(
            parse_errors(quote!(w: if c { } else { b };)),
            ["empty `if` branch; write the steps it runs, as in `{ manual_review -> approve }`"]
        );
        assert_eq!(
            parse_errors(quote!(w: a -> map() -> b;)),
            ["empty `map()`; write the step to run for each item, as in `map(score)`"]
        );
        assert_eq!(
            parse_errors(quote!(w: a -> map(b c);)),
            ["expected `->`, `,` or `)` after the steps of `map(..)`"]
        );
    }

    #[test]
    fn an_error_inside_brackets_leaves_the_next_workflows_read() {
        let file: WorkflowFile = syn::parse2(quote! {
            first: a -> (b c) -> d;
            second: a -> match { X(y) => b c };
            third: a -> map(b, 4);
            fourth: a;
        })
        .unwrap();
        let names: Vec<String> = file.workflows.iter().map(|w| w.name.to_string()).collect();
        assert_eq!(names, ["first", "second", "third", "fourth"]);
        let errors: Vec<usize> = file.workflows.iter().map(|w| w.errors.len()).collect();
        assert_eq!(errors, [1, 1, 1, 0]);
        assert_eq!(
            file.workflows[2].errors[0].to_string(),
            "expected a `map` option: `concurrency = 8` or `collect_errors`"
        );
    }

    #[test]
    fn parses_signals_and_sleeps() {
        let file: WorkflowFile = syn::parse2(quote! {
            w: hold -> signal(approval: my::Approval<u8>, timeout = "3d",) -> sleep("1s")
               -> sleep("2s") as pause -> (sleep("1ms"), signal(n: u32)) -> done;
        })
        .unwrap();
        assert!(file.workflows[0].errors.is_empty());
        let graph = file.workflows[0].graph.as_ref().unwrap();
        let mut steps = Vec::new();
        graph.steps(&mut steps);
        let names: Vec<String> = steps.iter().map(|s| s.ident().to_string()).collect();
        assert_eq!(
            names,
            ["hold", "approval", "sleep", "pause", "sleep_2", "n", "done"]
        );
        let Stage::Signal(signal) = &graph.stages[1] else {
            panic!("expected a signal")
        };
        assert_eq!(signal.timeout_ns(), Some(3 * 86_400_000_000_000));
        assert_eq!(
            parse_errors(quote!(w: a -> signal(approval) -> b;)),
            ["expected `signal(name: Type)` or `signal(name: Type, timeout = \"3d\")`, as in `signal(approval: Approval)`"]
        );
        assert_eq!(
            parse_errors(quote!(w: a -> signal(approval: A, wait = "1s") -> b;)),
            ["unknown `signal` option `wait`; expected `timeout = \"3d\"`"]
        );
        assert_eq!(
            parse_errors(quote!(w: a -> sleep(10) -> b;)),
            ["`sleep` takes a duration, as in `sleep(\"10m\")`"]
        );
    }

    #[test]
    fn merges_limits() {
        let file: WorkflowFile = syn::parse2(quote! {
            #[limit(concurrency = 1, key = "customer.id")]
            #[limit(rate = "100/s", key = "customer.id", priority = tier)]
            #[limit(debounce = "2s")]
            #[timeout("1h")]
            w: a;
        })
        .unwrap();
        let wf = &file.workflows[0];
        assert!(wf.errors.is_empty());
        let options: Vec<&str> = wf.limits.limits.iter().map(|(l, _)| l.option()).collect();
        assert_eq!(options, ["concurrency", "rate", "debounce"]);
        assert_eq!(wf.limits.key.as_ref().unwrap().parts(), ["customer", "id"]);
        assert_eq!(wf.limits.priority.as_ref().unwrap().parts(), ["tier"]);
        assert_eq!(wf.timeout.map(|(ns, _)| ns), Some(3_600_000_000_000));
        assert_eq!(
            parse_errors(quote! {
                #[limit(concurrency = 1, concurrency = 2)]
                #[limit(concurrency = "3", rate = "x", priority = a, priority = b)]
                #[limit()]
                #[timeout("1s")]
                #[timeout("2s")]
                w: a;
            }),
            [
                "`concurrency` specified more than once",
                "`concurrency` takes a whole number of runs from 1, as in `concurrency = 2`",
                "invalid rate `x`: expected `<count>/<period>`, e.g. \"100/s\", \"5/m\" or \"10/2s\"",
                "`priority` specified more than once",
                "`#[limit()]` declares no limit; expected `concurrency = 2`, `rate = \"100/s\"`, `debounce = \"2s\"`, `key = field` or `priority = field`",
                "`#[timeout(..)]` specified more than once",
            ]
        );
    }
}
