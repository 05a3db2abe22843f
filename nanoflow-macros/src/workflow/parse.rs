//! Parses `workflow! { ... }` into our own tree.

use syn::parse::{Parse, ParseStream};
use syn::{token, Token};

use super::ast::{Chain, NodeRef, Stage, WorkflowDecl, WorkflowFile};
use crate::trigger;

impl Parse for WorkflowFile {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut krate = None;
        while input.peek(Token![#]) && input.peek2(Token![!]) {
            input.parse::<Token![#]>()?;
            input.parse::<Token![!]>()?;
            let content;
            syn::bracketed!(content in input);
            let key: Token![crate] = content.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "the only inner attribute of `workflow!` is `#![crate = path]`",
                )
            })?;
            let _ = key;
            content.parse::<Token![=]>()?;
            krate = Some(content.parse::<syn::Path>()?);
        }
        let mut workflows = Vec::new();
        while !input.is_empty() {
            workflows.push(input.parse()?);
        }
        if workflows.is_empty() {
            return Err(input.error(
                "`workflow!` declares no workflow; write e.g. `workflow! { pub checkout: price -> total; }`",
            ));
        }
        Ok(WorkflowFile { krate, workflows })
    }
}

impl Parse for WorkflowDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(syn::Attribute::parse_outer)?;
        let mut docs = Vec::new();
        let mut triggers = Vec::new();
        for attr in attrs {
            if attr.path().is_ident("doc") {
                docs.push(attr);
            } else if attr.path().is_ident("trigger") {
                triggers.push(trigger::parse::parse(&attr)?);
            } else {
                return Err(syn::Error::new_spanned(
                    attr.path(),
                    "unsupported attribute on a workflow; expected doc comments or `#[trigger(...)]`",
                ));
            }
        }
        let vis: syn::Visibility = input.parse()?;
        let name: syn::Ident = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected a workflow name, as in `pub checkout: price -> total;`",
            )
        })?;
        let colon: Token![:] = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("expected `:` after the workflow name `{name}`"),
            )
        })?;
        let graph = if input.peek(Token![;]) {
            Chain { stages: Vec::new() }
        } else {
            input.parse()?
        };
        input.parse::<Token![;]>().map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("expected `->` or `;` to end workflow `{name}`"),
            )
        })?;
        Ok(WorkflowDecl {
            docs,
            triggers,
            vis,
            name,
            colon: colon.span,
            graph,
        })
    }
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
        let graph = &file.workflows[0].graph;
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

    #[test]
    fn rejects_garbage() {
        assert!(syn::parse2::<WorkflowFile>(quote!(w: a -> ;)).is_err());
        assert!(syn::parse2::<WorkflowFile>(quote!()).is_err());
        assert!(syn::parse2::<WorkflowFile>(quote!(w a;)).is_err());
    }
}
