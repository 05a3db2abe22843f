//! Parses `workflow! { ... }` into our own tree.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{token, Token};

use syn::punctuated::Punctuated;

use super::ast::{Chain, Compensation, Defaults, NodeRef, Stage, WorkflowDecl, WorkflowFile};
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
        Ok(graph) => decl.graph = Some(graph),
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
        } else {
            decl.errors.push(syn::Error::new_spanned(
                attr.path(),
                "unsupported attribute on a workflow; expected doc comments, `#[trigger(...)]`, `#[defaults(...)]` or `#[compensate(...)]`",
            ));
        }
    }
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
            let _ = meta.input.step(|cursor| {
                let mut rest = *cursor;
                while let Some((tt, next)) = rest.token_tree() {
                    if matches!(&tt, proc_macro2::TokenTree::Punct(p) if p.as_char() == ',') {
                        break;
                    }
                    rest = next;
                }
                Ok(((), rest))
            });
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
            let branches = content.parse_terminated(Chain::parse, Token![,])?;
            return Ok(Stage::Group {
                paren: paren.span.join(),
                branches: branches.into_iter().collect(),
            });
        }
        if input.peek(syn::Ident)
            || input.peek(Token![::])
            || input.peek(Token![crate])
            || input.peek(Token![self])
            || input.peek(Token![super])
        {
            let path = input.call(syn::Path::parse_mod_style)?;
            let alias = if input.peek(Token![as]) {
                input.parse::<Token![as]>()?;
                Some(input.parse()?)
            } else {
                None
            };
            return Ok(Stage::Node(NodeRef { path, alias }));
        }
        Err(input.error("expected a node name or `(` to start parallel branches"))
    }
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
            Stage::Node(_) => panic!("expected a group"),
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
            ["expected a node name or `(` to start parallel branches"]
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
}
