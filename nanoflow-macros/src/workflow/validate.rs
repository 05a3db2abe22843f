//! Structural checks the macro can make itself: empty graphs, duplicate names, triggers.
//! Type checks are left to the compiler (see `expand`).

use std::collections::HashMap;

use super::ast::{Chain, Stage, WorkflowFile};
use crate::ctxt::Ctxt;
use crate::trigger;

pub(crate) fn validate(file: &WorkflowFile) -> syn::Result<()> {
    let mut cx = Ctxt::default();
    let mut names: HashMap<String, &syn::Ident> = HashMap::new();
    let mut routes: HashMap<String, String> = HashMap::new();
    for wf in &file.workflows {
        let name = wf.name.to_string();
        if names.insert(name.clone(), &wf.name).is_some() {
            cx.error_spanned_by(
                &wf.name,
                format!("workflow `{name}` is declared more than once"),
            );
        }
        if wf.graph.stages.is_empty() {
            cx.error_at(
                wf.colon,
                format!("workflow `{name}` has no steps; write at least one node, e.g. `{name}: validate -> confirm;`"),
            );
        }
        check_chain(&mut cx, &wf.graph, &name);
        let mut steps: HashMap<String, &syn::Ident> = HashMap::new();
        let mut nodes = Vec::new();
        wf.graph.nodes(&mut nodes);
        for node in nodes {
            let step = node.step_ident();
            let key = step.to_string();
            if steps.insert(key.clone(), step).is_some() {
                let message = if node.alias.is_some() {
                    format!(
                        "the name `{key}` is used twice in workflow `{name}`; choose another alias"
                    )
                } else {
                    format!(
                        "node `{key}` appears twice in workflow `{name}`; give this use an alias: `{key} as {key}_2`"
                    )
                };
                cx.error_spanned_by(step, message);
            }
        }
        for t in &wf.triggers {
            trigger::validate::validate(&mut cx, t);
            if let Some(route) = t.route_key() {
                if let Some(other) = routes.insert(route.clone(), name.clone()) {
                    cx.error_at(
                        t.span,
                        format!("route `{route}` is already served by workflow `{other}`"),
                    );
                }
            }
        }
    }
    cx.check()
}

fn check_chain(cx: &mut Ctxt, chain: &Chain, workflow: &str) {
    for stage in &chain.stages {
        if let Stage::Group { paren, branches } = stage {
            if branches.is_empty() {
                cx.error_at(*paren, format!("empty parallel group `()` in workflow `{workflow}`; list branches like `(tax, shipping)`"));
            }
            for b in branches {
                check_chain(cx, b, workflow);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ast::WorkflowFile;
    use quote::quote;

    fn errors(tokens: proc_macro2::TokenStream) -> String {
        let file: WorkflowFile = syn::parse2(tokens).unwrap();
        match super::validate(&file) {
            Ok(()) => String::new(),
            Err(e) => e
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    #[test]
    fn collects_every_error() {
        let e = errors(quote! {
            w: a -> a -> ();
            w: ;
        });
        assert!(e.contains("node `a` appears twice in workflow `w`"), "{e}");
        assert!(e.contains("empty parallel group"), "{e}");
        assert!(e.contains("workflow `w` is declared more than once"), "{e}");
        assert!(e.contains("workflow `w` has no steps"), "{e}");
    }

    #[test]
    fn aliases_make_duplicates_fine() {
        assert_eq!(errors(quote!(w: charge -> charge as retry_charge;)), "");
        assert!(errors(quote!(w: a as b -> b;)).contains("node `b` appears twice"));
    }
}
