//! Structural checks the macro can make itself: empty graphs, duplicate names, triggers.
//! Type checks are left to the compiler (see `expand`).

use std::collections::HashMap;

use proc_macro2::Span;

use super::ast::{
    Chain, Map, Match, Misplaced, Pattern, Stage, StepRef, WorkflowDecl, WorkflowFile,
};
use crate::ctxt::Ctxt;
use crate::trigger;

/// The errors of each workflow, in declaration order (one list per workflow).
pub(crate) fn validate(file: &WorkflowFile) -> Vec<Vec<syn::Error>> {
    let mut names: HashMap<String, &syn::Ident> = HashMap::new();
    let mut routes: HashMap<String, String> = HashMap::new();
    let mut all = Vec::new();
    for wf in &file.workflows {
        let mut cx = Ctxt::default();
        let name = wf.name.to_string();
        if names.insert(name.clone(), &wf.name).is_some() {
            cx.error_spanned_by(
                &wf.name,
                format!("workflow `{name}` is declared more than once in this `workflow!`; rename one of them"),
            );
        }
        if wf.node_named_like_it().is_some() {
            cx.error_spanned_by(
                &wf.name,
                format!(
                    "workflow `{name}` has the same name as its node `{name}`; rename the workflow, e.g. `{name}_flow`"
                ),
            );
        }
        if let Some(graph) = &wf.graph {
            check_graph(&mut cx, graph, wf.colon, &name);
            let mut nodes = Vec::new();
            graph.nodes(&mut nodes);
            let mut compensated: Vec<String> = Vec::new();
            for c in &wf.compensations {
                let step = c.step.to_string();
                if !nodes.iter().any(|n| *n.step_ident() == c.step) {
                    cx.error_spanned_by(
                        &c.step,
                        format!("`{step}` is not a step of workflow `{name}`; `#[compensate(step => undo)]` names a step of the graph"),
                    );
                } else if compensated.contains(&step) {
                    cx.error_spanned_by(
                        &c.step,
                        format!("step `{step}` has more than one compensation"),
                    );
                }
                compensated.push(step);
            }
        }
        check_finishes(&mut cx, wf);
        check_limit_key(&mut cx, wf);
        for t in &wf.triggers {
            trigger::validate::validate(&mut cx, t);
            if let Some(route) = t.route_key() {
                if let Some(other) = routes.insert(route.clone(), name.clone()) {
                    cx.error_at(
                        t.value_span(),
                        format!("route `{route}` is already served by workflow `{other}`"),
                    );
                }
            }
        }
        all.push(cx);
    }
    check_after_cycles(file, &mut all);
    all.into_iter().map(Ctxt::into_errors).collect()
}

/// `#[finishes(other)]`: the graph kept to finish `other`'s old runs starts no run of its own
/// (no trigger), and is not `other` itself.
fn check_finishes(cx: &mut Ctxt, wf: &super::ast::WorkflowDecl) {
    let Some(other) = &wf.finishes else { return };
    let name = &wf.name;
    if let Some(t) = wf.triggers.first() {
        cx.error_at(
            t.value_span(),
            format!("workflow `{name}` finishes the runs of another workflow (`#[finishes(..)]`) and takes no trigger: new runs start on the current graph"),
        );
    }
    if other.is_ident(name) {
        cx.error_spanned_by(
            other,
            format!("workflow `{name}` cannot finish its own runs; `#[finishes(..)]` names the current workflow, and this one is the previous graph kept under another name"),
        );
    }
}

/// `after` triggers between workflows of this invocation that form a cycle: each run would
/// start the next forever. Reported once per cycle, at the `after` of its first workflow.
fn check_after_cycles(file: &WorkflowFile, cxs: &mut [Ctxt]) {
    let index: HashMap<String, usize> = file
        .workflows
        .iter()
        .enumerate()
        .map(|(i, wf)| (wf.name.to_string(), i))
        .rev() // the first declaration of a name wins
        .collect();
    // upstream[i]: the workflows whose completion starts workflow `i`, with the token.
    let upstream: Vec<Vec<(usize, &syn::Ident)>> = file
        .workflows
        .iter()
        .map(|wf| {
            wf.triggers
                .iter()
                .filter_map(|t| t.after_ident())
                .filter_map(|id| index.get(&id.to_string()).map(|&i| (i, id)))
                .collect()
        })
        .collect();
    let mut reported: Vec<Vec<usize>> = Vec::new();
    for start in 0..file.workflows.len() {
        for &(up, token) in &upstream[start] {
            // A path from `start` back to `up` through downstream edges closes a cycle.
            let Some(mut cycle) = path_to(&upstream, start, up) else {
                continue;
            };
            let mut key = cycle.clone();
            key.sort_unstable();
            if reported.contains(&key) {
                continue;
            }
            reported.push(key);
            let names = |ids: &[usize]| {
                ids.iter()
                    .map(|&i| file.workflows[i].name.to_string())
                    .collect::<Vec<_>>()
            };
            let name = file.workflows[start].name.to_string();
            let message = if up == start {
                format!("workflow `{name}` is triggered after itself: each run would start another, forever; remove this `after`")
            } else {
                // Written in the order runs would start: up -> ... -> start -> up.
                cycle.reverse();
                let mut order = names(&cycle);
                order.push(order[0].clone());
                format!(
                    "`after` triggers form a cycle: {}; each run would start the next, forever; remove one of them",
                    order.join(" -> ")
                )
            };
            cxs[start].error_spanned_by(token, message);
        }
    }
}

/// The workflows from `from` to `to` following "is started by" edges (`upstream`), both ends
/// included, if `to` is reachable.
fn path_to(upstream: &[Vec<(usize, &syn::Ident)>], from: usize, to: usize) -> Option<Vec<usize>> {
    // `from` is started after `to`; a cycle needs `to` to be started (transitively) after `from`.
    let mut stack = vec![vec![to]];
    let mut seen = vec![false; upstream.len()];
    while let Some(path) = stack.pop() {
        let last = *path.last().expect("paths are never empty");
        if last == from {
            return Some(path);
        }
        if std::mem::replace(&mut seen[last], true) {
            continue;
        }
        for &(next, _) in &upstream[last] {
            let mut longer = path.clone();
            longer.push(next);
            stack.push(longer);
        }
    }
    None
}

fn check_graph(cx: &mut Ctxt, graph: &Chain, colon: Span, name: &str) {
    if graph.stages.is_empty() {
        cx.error_at(colon, format!("workflow `{name}` has no steps; write at least one node, e.g. `{name}: validate -> confirm;`"));
    }
    check_wait_durations(cx, graph);
    if let Some(m) = graph.leading_match() {
        cx.error_at(
            m.keyword,
            format!("workflow `{name}` starts with a `match`, but a `match` matches the output of the step before it; start with a node, e.g. `{name}: review -> match {{ .. }};`"),
        );
    }
    check_chain(cx, graph, name, true);
    check_wait_placement(cx, graph, name);
    let mut names: HashMap<String, &syn::Ident> = HashMap::new();
    let mut steps = Vec::new();
    graph.steps(&mut steps);
    for step in steps {
        let ident = step.ident();
        let key = ident.to_string();
        if names.insert(key.clone(), ident).is_some() {
            let message = match step {
                StepRef::Node(node) if node.alias.is_some() => format!(
                    "the name `{key}` is used twice in workflow `{name}`; choose another alias"
                ),
                StepRef::Node(_) => format!("node `{key}` appears twice in workflow `{name}`; give this use an alias: `{key} as {key}_2`"),
                StepRef::Signal(_) => format!("the name `{key}` is used twice in workflow `{name}`; a signal's name is its step's name: choose another"),
                StepRef::Sleep(s) if s.aliased => format!(
                    "the name `{key}` is used twice in workflow `{name}`; choose another alias"
                ),
                StepRef::Sleep(_) => format!("the name `{key}` is used twice in workflow `{name}`; name this sleep: `sleep(..) as pause`"),
            };
            cx.error_spanned_by(ident, message);
        }
    }
}

/// `signal` and `sleep` pass on the value before them, whose type the expansion must name: not
/// first in the workflow (no node names its input), nor first in a `match` arm binding fields,
/// and not inside a `map(..)` (one item cannot wait while the others go on).
fn check_wait_placement(cx: &mut Ctxt, graph: &Chain, name: &str) {
    if let Some(keyword) = graph.leading_wait() {
        cx.error_spanned_by(
            keyword,
            format!("workflow `{name}` starts with `{keyword}`, which passes on the value before it; start with a node, e.g. `{name}: receive -> {keyword}(..) -> ..;`"),
        );
    }
    for (keyword, why) in graph.misplaced_waits(true, false) {
        let message = match why {
            Misplaced::InMap => format!("`{keyword}` inside `map(..)` is not supported: a wait holds the whole run, not one item; put it before or after the `map`"),
            Misplaced::Unnamed => format!("`{keyword}` cannot come first in this `match` arm: it passes on the arm's payload, whose type the graph cannot name; put a node before it, e.g. `Approved(a) => record -> {keyword}(..)`"),
        };
        cx.error_spanned_by(keyword, message);
    }
}

/// The durations of `signal(.., timeout = ..)` and `sleep(..)`: valid, and longer than zero.
fn check_wait_durations(cx: &mut Ctxt, chain: &Chain) {
    let mut steps = Vec::new();
    chain.steps(&mut steps);
    for step in steps {
        let (lit, what) = match step {
            StepRef::Signal(s) => match &s.timeout {
                Some(lit) => (lit, "a signal's `timeout`"),
                None => continue,
            },
            StepRef::Sleep(s) => (&s.duration, "`sleep`"),
            StepRef::Node(_) => continue,
        };
        match crate::duration::parse(&lit.value()) {
            Err(e) => cx.error_spanned_by(lit, e),
            Ok(0) => cx.error_spanned_by(lit, format!("{what} must be longer than zero")),
            Ok(_) => {}
        }
    }
}

/// `key` and `priority` of `#[limit(..)]` say how limits apply: alone they limit nothing.
fn check_limit_key(cx: &mut Ctxt, wf: &WorkflowDecl) {
    if !wf.limits.limits.is_empty() {
        return;
    }
    for (option, path) in [("key", &wf.limits.key), ("priority", &wf.limits.priority)] {
        if let Some(path) = path {
            cx.error_at(
                path.span,
                format!("`{option}` applies to a limit, and workflow `{}` has none; add `concurrency = 2`, `rate = \"100/s\"` or `debounce = \"2s\"` to this `#[limit(..)]`", wf.name),
            );
        }
    }
}

/// Checks `chain`, whose input has a type the expansion can name when `named` (it cannot
/// name the payload of a `match` arm).
fn check_chain(cx: &mut Ctxt, chain: &Chain, workflow: &str, mut named: bool) {
    for stage in &chain.stages {
        match stage {
            Stage::Node(_) | Stage::Signal(_) | Stage::Sleep(_) => {}
            Stage::Group { paren, branches } => {
                if branches.is_empty() {
                    cx.error_at(*paren, format!("empty parallel group `()` in workflow `{workflow}`; list branches like `(tax, shipping)`"));
                }
                for b in branches {
                    check_chain(cx, b, workflow, named);
                }
            }
            Stage::Match(m) => check_match(cx, m, workflow, named),
            Stage::If(i) => {
                check_chain(cx, &i.then, workflow, named);
                check_chain(cx, &i.otherwise, workflow, named);
            }
            Stage::Map(m) => {
                check_map(cx, m);
                check_chain(cx, &m.body, workflow, named);
            }
        }
        // Every stage's output has a type the expansion can name.
        named = true;
    }
}

fn check_match(cx: &mut Ctxt, m: &Match, workflow: &str, named: bool) {
    if m.arms.is_empty() {
        cx.error_at(
            m.brace,
            format!("`match` without arms in workflow `{workflow}`; write one arm per variant, as in `match {{ Approved(a) => ship, Rejected(r) => refund }}`"),
        );
    }
    for arm in &m.arms {
        if let Pattern::Variant { path, .. } = &arm.pattern {
            if !named && path.segments.len() == 1 && path.leading_colon.is_none() {
                let variant = &path.segments[0].ident;
                cx.error_spanned_by(
                    path,
                    format!("write the enum of `{variant}` in this pattern, as in `MyEnum::{variant}`: this `match` starts an arm of another `match`, so it matches a payload whose type the graph cannot name"),
                );
            }
        }
        let takes_payload = match &arm.pattern {
            Pattern::Wild(_) => named,
            Pattern::Variant { .. } => arm.pattern.bindings().is_empty(),
        };
        check_chain(cx, &arm.body, workflow, takes_payload);
    }
}

fn check_map(cx: &mut Ctxt, m: &Map) {
    let mut seen: Vec<String> = Vec::new();
    for option in &m.options {
        let key = option.key.to_string();
        if seen.contains(&key) {
            cx.error_spanned_by(&option.key, format!("`{key}` specified more than once"));
            continue;
        }
        seen.push(key.clone());
        match (key.as_str(), &option.value) {
            ("concurrency", Some(value)) => {
                let valid = matches!(
                    value,
                    syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Int(n), .. })
                        if n.base10_parse::<usize>().is_ok_and(|n| n > 0)
                );
                if !valid {
                    cx.error_spanned_by(
                        value,
                        "`concurrency` takes a whole number of items from 1, as in `concurrency = 8`",
                    );
                }
            }
            ("concurrency", None) => cx.error_spanned_by(
                &option.key,
                "`concurrency` needs a value: how many items run at once, as in `concurrency = 8`",
            ),
            ("collect_errors", None) => {}
            ("collect_errors", Some(value)) => cx.error_spanned_by(
                value,
                "`collect_errors` takes no value: write `map(score, collect_errors)`",
            ),
            _ => cx.error_spanned_by(
                &option.key,
                format!(
                    "unknown `map` option `{key}`; expected `concurrency = N` or `collect_errors`"
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ast::WorkflowFile;
    use quote::quote;

    /// Every message, parse errors and validation errors alike.
    fn errors(tokens: proc_macro2::TokenStream) -> String {
        let file: WorkflowFile = syn::parse2(tokens).unwrap();
        let mut all: Vec<String> = file.errors.iter().map(ToString::to_string).collect();
        for wf in &file.workflows {
            all.extend(wf.errors.iter().map(ToString::to_string));
        }
        for list in super::validate(&file) {
            all.extend(list.iter().map(ToString::to_string));
        }
        all.join("\n")
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
        assert!(errors(quote!(w: a -> b -> a as b;)).contains("the name `b` is used twice"));
    }

    #[test]
    fn nested_groups_are_checked() {
        assert!(errors(quote!(w: a -> (b -> (), c) -> d;)).contains("empty parallel group"));
        assert_eq!(errors(quote!(w: a -> (b -> c, d) -> e;)), "");
    }

    #[test]
    fn a_workflow_is_not_named_like_its_node() {
        let e = errors(quote!(price: price -> total;));
        assert_eq!(e, "workflow `price` has the same name as its node `price`; rename the workflow, e.g. `price_flow`");
        assert_eq!(errors(quote!(price: prices::price;)), "");
    }

    #[test]
    fn routes_are_unique_per_invocation() {
        let e = errors(quote! {
            #[trigger(http = "POST /a")]
            w1: a;
            #[trigger(http = "/a")]
            w2: a;
            #[trigger(http = "GET /a")]
            w3: a;
        });
        assert_eq!(e, "route `POST /a` is already served by workflow `w1`");
    }

    #[test]
    fn after_cycles() {
        let e = errors(quote! {
            #[trigger(after = c)]
            a: x;
            #[trigger(after = a)]
            b: x;
            #[trigger(after = b)]
            c: x;
            #[trigger(after = d)]
            d: x;
            #[trigger(after = a)]
            e: x;
            #[trigger(after = elsewhere::f)]
            f: x;
        });
        assert_eq!(
            e,
            "`after` triggers form a cycle: a -> b -> c -> a; each run would start the next, forever; remove one of them\n\
             workflow `d` is triggered after itself: each run would start another, forever; remove this `after`"
        );
        assert_eq!(errors(quote!(#[trigger(after = a)] b: x; a: x;)), "");
    }

    #[test]
    fn errors_belong_to_their_workflow() {
        let file: WorkflowFile = syn::parse2(quote! {
            ok: a -> b;
            bad: a -> ();
            ok: a;
        })
        .unwrap();
        let lists = super::validate(&file);
        assert_eq!(lists.iter().map(Vec::len).collect::<Vec<_>>(), [0, 1, 1]);
        assert!(!file.workflows[0].is_broken());
        assert!(file.workflows[1].is_broken());
    }

    #[test]
    fn a_match_needs_a_step_before_it_and_arms() {
        let e = errors(quote!(w: match { Some(x) => a, None => b };));
        assert_eq!(e, "workflow `w` starts with a `match`, but a `match` matches the output of the step before it; start with a node, e.g. `w: review -> match { .. };`");
        let e = errors(quote!(w: (c, match { Some(x) => a }) -> d;));
        assert!(e.starts_with("workflow `w` starts with a `match`"), "{e}");
        let e = errors(quote!(w: c -> match {};));
        assert!(e.starts_with("`match` without arms in workflow `w`"), "{e}");
        let file: WorkflowFile = syn::parse2(quote!(w: c -> match {};)).unwrap();
        assert!(file.workflows[0].is_broken());
        assert_eq!(
            errors(quote!(w: c -> map(match { Some(x) => a, None => b });)),
            ""
        );
    }

    #[test]
    fn a_match_on_a_payload_names_its_enum() {
        let e = errors(
            quote!(w: c -> match { Some(x) => match { Ok(y) => a, Err(z) => b }, None => d };),
        );
        assert!(
            e.contains("write the enum of `Ok` in this pattern, as in `MyEnum::Ok`"),
            "{e}"
        );
        assert!(e.contains("write the enum of `Err`"), "{e}");
        // Named, or after a payload-free pattern, or after a node: fine.
        assert_eq!(
            errors(
                quote!(w: c -> match { Some(x) => match { Result::Ok(y) => a, Result::Err(z) => b }, None => d };)
            ),
            ""
        );
        assert_eq!(
            errors(quote!(w: c -> match { None => match { Ok(y) => a, Err(z) => b }, _ => d };)),
            ""
        );
        assert_eq!(
            errors(
                quote!(w: c -> match { Some(x) => e -> match { Ok(y) => a, Err(z) => b }, None => d };)
            ),
            ""
        );
    }

    #[test]
    fn map_options_are_checked() {
        assert_eq!(
            errors(quote!(w: a -> map(b, concurrency = 8, collect_errors);)),
            ""
        );
        assert_eq!(
            errors(quote!(w: a -> map(b, concurrency = 0);)),
            "`concurrency` takes a whole number of items from 1, as in `concurrency = 8`"
        );
        assert_eq!(
            errors(quote!(w: a -> map(b, concurrency = "8");)),
            "`concurrency` takes a whole number of items from 1, as in `concurrency = 8`"
        );
        assert_eq!(
            errors(quote!(w: a -> map(b, concurrency);)),
            "`concurrency` needs a value: how many items run at once, as in `concurrency = 8`"
        );
        assert_eq!(
            errors(quote!(w: a -> map(b, collect_errors = true);)),
            "`collect_errors` takes no value: write `map(score, collect_errors)`"
        );
        assert_eq!(
            errors(quote!(w: a -> map(b, limit = 2, concurrency = 2, concurrency = 3);)),
            "unknown `map` option `limit`; expected `concurrency = N` or `collect_errors`\n`concurrency` specified more than once"
        );
    }

    #[test]
    fn step_names_are_unique_across_branches_and_maps() {
        let e = errors(quote!(w: a -> match { X(x) => b, Y(y) => b } -> map(a);));
        assert!(e.contains("node `b` appears twice"), "{e}");
        assert!(e.contains("node `a` appears twice"), "{e}");
        assert_eq!(errors(quote!(w: if c { a } else { a as a_2 };)), "");
    }

    #[test]
    fn waits_are_placed_where_their_input_is_named() {
        assert_eq!(
            errors(
                quote!(w: a -> match { X(x) => b -> signal(s: S), Y => sleep("1s") -> c, _ => sleep("1s") as z -> d } -> if e { signal(t: T) -> f } else { g };)
            ),
            ""
        );
        let e =
            errors(quote!(w: a -> map(b -> sleep("1s")) -> match { X(x) => signal(s: S) -> c };));
        assert!(
            e.contains("`sleep` inside `map(..)` is not supported"),
            "{e}"
        );
        assert!(
            e.contains("`signal` cannot come first in this `match` arm"),
            "{e}"
        );
        let e = errors(quote!(w: (signal(s: S), a) -> b;));
        assert!(e.starts_with("workflow `w` starts with `signal`"), "{e}");
        let file: WorkflowFile = syn::parse2(quote!(w: a -> map(sleep("1s"));)).unwrap();
        assert!(file.workflows[0].is_broken());
    }

    #[test]
    fn wait_names_are_step_names() {
        let e = errors(quote!(w: a -> signal(a: A) -> sleep("1s") -> sleep("1s") as sleep;));
        assert!(
            e.contains(
                "the name `a` is used twice in workflow `w`; a signal's name is its step's name"
            ),
            "{e}"
        );
        assert!(
            e.contains("the name `sleep` is used twice in workflow `w`; choose another alias"),
            "{e}"
        );
        let e = errors(quote!(w: sleep -> sleep("1s");));
        assert!(e.contains("name this sleep: `sleep(..) as pause`"), "{e}");
        assert_eq!(
            errors(quote!(w: a -> sleep("0s") -> signal(s: S, timeout = "0ms");)),
            "`sleep` must be longer than zero\na signal's `timeout` must be longer than zero"
        );
    }

    #[test]
    fn a_key_needs_a_limit() {
        assert_eq!(
            errors(quote!(#[limit(key = customer, priority = tier)] w: a;)),
            "`key` applies to a limit, and workflow `w` has none; add `concurrency = 2`, `rate = \"100/s\"` or `debounce = \"2s\"` to this `#[limit(..)]`\n\
             `priority` applies to a limit, and workflow `w` has none; add `concurrency = 2`, `rate = \"100/s\"` or `debounce = \"2s\"` to this `#[limit(..)]`"
        );
        assert_eq!(
            errors(quote!(#[limit(key = customer)] #[limit(concurrency = 1)] w: a;)),
            ""
        );
    }
}
