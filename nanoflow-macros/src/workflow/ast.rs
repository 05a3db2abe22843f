//! The parsed form of a `workflow!` invocation, keeping the user's spans.

use proc_macro2::Span;

use crate::trigger::ast::Trigger;

pub(crate) struct WorkflowFile {
    /// `#![crate = path]` when the user renamed the `nanoflow` dependency.
    pub(crate) krate: Option<syn::Path>,
    pub(crate) workflows: Vec<WorkflowDecl>,
    /// Syntax errors outside any workflow that has a name (reported as they are).
    pub(crate) errors: Vec<syn::Error>,
}

/// `/// doc  #[trigger(..)]  pub name: graph;`
pub(crate) struct WorkflowDecl {
    pub(crate) docs: Vec<syn::Attribute>,
    pub(crate) triggers: Vec<Trigger>,
    /// `#[defaults(retries = 2, timeout = "5s")]`: node options for steps that do not set them.
    pub(crate) defaults: Defaults,
    /// `#[compensate(charge => refund)]`: the node undoing a completed step if the run fails.
    pub(crate) compensations: Vec<Compensation>,
    /// `#[finishes(checkout)]`: this graph is the previous build's `checkout`, kept to finish
    /// the runs recorded with it (issue 13).
    pub(crate) finishes: Option<syn::Path>,
    pub(crate) vis: syn::Visibility,
    pub(crate) name: syn::Ident,
    pub(crate) colon: Span,
    /// `None` when the graph could not be parsed (the error is in `errors`).
    pub(crate) graph: Option<Chain>,
    /// Syntax errors in this declaration: its attributes, its graph.
    pub(crate) errors: Vec<syn::Error>,
}

impl WorkflowDecl {
    /// The node of this workflow's graph that has the workflow's own name, if any: the two
    /// would be declared in one namespace.
    pub(crate) fn node_named_like_it(&self) -> Option<&NodeRef> {
        let mut nodes = Vec::new();
        self.graph.as_ref()?.nodes(&mut nodes);
        nodes.into_iter().find(|n| n.path.is_ident(&self.name))
    }

    /// Whether the graph cannot be expanded: it failed to parse, is empty, has an empty `()` or
    /// `match {}`, or starts with a `match`.
    pub(crate) fn is_broken(&self) -> bool {
        match &self.graph {
            None => true,
            Some(graph) => {
                graph.stages.is_empty()
                    || graph.has_empty_group()
                    || graph.leading_match().is_some()
            }
        }
    }
}

/// Stages joined by `->`.
pub(crate) struct Chain {
    pub(crate) stages: Vec<Stage>,
}

pub(crate) enum Stage {
    /// One node, maybe aliased: `charge as retry_charge`.
    Node(NodeRef),
    /// Parallel branches: `(b -> c, d)`; each gets a copy of the previous output.
    Group { paren: Span, branches: Vec<Chain> },
    /// `match { Approved(a) => ship, Rejected(r) => refund }`: one arm per variant of the
    /// previous step's output, each taking the variant's payload.
    Match(Match),
    /// `if is_big { manual } else { auto }`: a node returning `bool` looks at a copy of the
    /// value and chooses the branch that gets it.
    If(If),
    /// `map(score, concurrency = 8)`: the chain runs once per item of a collection.
    Map(Map),
}

/// `match { arms }`.
pub(crate) struct Match {
    /// The `match` keyword.
    pub(crate) keyword: Span,
    /// The `{ .. }` around the arms.
    pub(crate) brace: Span,
    pub(crate) arms: Vec<Arm>,
}

/// `Pattern => chain`.
pub(crate) struct Arm {
    pub(crate) pattern: Pattern,
    pub(crate) body: Chain,
}

/// The pattern of a `match` arm: a variant (its fields bound or skipped), or `_`.
pub(crate) enum Pattern {
    /// `_`: every other value; the arm takes the whole value.
    Wild(Span),
    /// `Approved(a)`, `Pending`, `Moved { to, .. }`, `Review::Approved(a)`.
    Variant { path: syn::Path, fields: Fields },
}

pub(crate) enum Fields {
    /// `Pending`.
    Unit,
    /// `Approved(a, _, ..)`.
    Tuple(Vec<FieldPat>),
    /// `Moved { to, from: _, .. }`: fields by name.
    Struct(Vec<(syn::Ident, FieldPat)>),
}

/// One field of a variant pattern.
pub(crate) enum FieldPat {
    /// Bound: part of what the arm's first step takes.
    Bind(syn::Ident),
    /// `_`: skipped.
    Skip(Span),
    /// `..`: the other fields, skipped.
    Rest(Span),
}

impl Pattern {
    /// The label of the arm in graphs: the variant's name, or `_`.
    pub(crate) fn label(&self) -> String {
        match self {
            Pattern::Wild(_) => "_".to_owned(),
            Pattern::Variant { path, .. } => path
                .segments
                .last()
                .map(|s| s.ident.to_string())
                .unwrap_or_default(),
        }
    }

    /// The fields bound, in written order: the arm's first step takes `()` for none, the value
    /// for one, and a tuple for several.
    pub(crate) fn bindings(&self) -> Vec<&syn::Ident> {
        let fields: Vec<&FieldPat> = match self {
            Pattern::Wild(_)
            | Pattern::Variant {
                fields: Fields::Unit,
                ..
            } => Vec::new(),
            Pattern::Variant {
                fields: Fields::Tuple(f),
                ..
            } => f.iter().collect(),
            Pattern::Variant {
                fields: Fields::Struct(f),
                ..
            } => f.iter().map(|(_, p)| p).collect(),
        };
        fields
            .into_iter()
            .filter_map(|f| match f {
                FieldPat::Bind(ident) => Some(ident),
                _ => None,
            })
            .collect()
    }
}

/// `if cond { then } else { otherwise }`; `else if` nests another `If` as the `else` chain.
pub(crate) struct If {
    /// The `if` keyword.
    pub(crate) keyword: Span,
    /// The node choosing the branch.
    pub(crate) cond: NodeRef,
    pub(crate) then: Chain,
    pub(crate) otherwise: Chain,
}

/// `map(chain, concurrency = 8, collect_errors)`.
pub(crate) struct Map {
    /// The `map` keyword.
    pub(crate) keyword: syn::Ident,
    pub(crate) body: Chain,
    /// Options as written; `validate` checks them.
    pub(crate) options: Vec<MapOption>,
}

/// `key` or `key = value` after a map's chain.
pub(crate) struct MapOption {
    pub(crate) key: syn::Ident,
    pub(crate) value: Option<syn::Expr>,
}

impl Map {
    /// `concurrency = N`, when valid.
    pub(crate) fn concurrency(&self) -> Option<usize> {
        self.options
            .iter()
            .find(|o| o.key == "concurrency")
            .and_then(|o| match &o.value {
                Some(syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Int(n),
                    ..
                })) => n.base10_parse::<usize>().ok().filter(|n| *n > 0),
                _ => None,
            })
    }

    /// Whether `collect_errors` is given.
    pub(crate) fn collect_errors(&self) -> bool {
        self.options.iter().any(|o| o.key == "collect_errors")
    }
}

pub(crate) struct NodeRef {
    /// The node's path (`charge` or `payments::charge`).
    pub(crate) path: syn::Path,
    pub(crate) alias: Option<syn::Ident>,
}

impl NodeRef {
    /// The step's name in the graph: the alias, or the node's last path segment.
    pub(crate) fn step_ident(&self) -> &syn::Ident {
        match &self.alias {
            Some(alias) => alias,
            None => {
                &self
                    .path
                    .segments
                    .last()
                    .expect("a path has a segment")
                    .ident
            }
        }
    }
}

impl Chain {
    /// The leftmost node: the one whose input is the chain's input (`None` when the chain
    /// starts with a `match`, which has no node of its own).
    pub(crate) fn entry(&self) -> Option<&NodeRef> {
        match self.stages.first()? {
            Stage::Node(n) => Some(n),
            Stage::Group { branches, .. } => branches.first()?.entry(),
            Stage::Match(_) => None,
            Stage::If(i) => Some(&i.cond),
            Stage::Map(m) => m.body.entry(),
        }
    }

    /// The `match` reached first from the chain's input, if any: it would have to match the
    /// chain's input, whose type no step names.
    pub(crate) fn leading_match(&self) -> Option<&Match> {
        match self.stages.first()? {
            Stage::Match(m) => Some(m),
            Stage::Group { branches, .. } => branches.iter().find_map(Chain::leading_match),
            Stage::Map(m) => m.body.leading_match(),
            Stage::Node(_) | Stage::If(_) => None,
        }
    }

    /// Whether any parallel group, at any depth, is an empty `()`, or any `match` has no arm.
    pub(crate) fn has_empty_group(&self) -> bool {
        self.stages.iter().any(|stage| match stage {
            Stage::Node(_) => false,
            Stage::Group { branches, .. } => {
                branches.is_empty() || branches.iter().any(Chain::has_empty_group)
            }
            Stage::Match(m) => m.arms.is_empty() || m.arms.iter().any(|a| a.body.has_empty_group()),
            Stage::If(i) => i.then.has_empty_group() || i.otherwise.has_empty_group(),
            Stage::Map(m) => m.body.has_empty_group(),
        })
    }

    /// The span of the last step, for errors about what follows the graph.
    pub(crate) fn end_span(&self) -> Option<Span> {
        match self.stages.last()? {
            Stage::Node(n) => Some(n.step_ident().span()),
            Stage::Group { paren, .. } => Some(*paren),
            Stage::Match(m) => Some(m.brace),
            Stage::If(i) => i.otherwise.end_span(),
            Stage::Map(m) => Some(m.keyword.span()),
        }
    }

    /// Every node, in written order (an `if`'s condition before its branches).
    pub(crate) fn nodes<'a>(&'a self, out: &mut Vec<&'a NodeRef>) {
        for stage in &self.stages {
            match stage {
                Stage::Node(n) => out.push(n),
                Stage::Group { branches, .. } => branches.iter().for_each(|b| b.nodes(out)),
                Stage::Match(m) => m.arms.iter().for_each(|a| a.body.nodes(out)),
                Stage::If(i) => {
                    out.push(&i.cond);
                    i.then.nodes(out);
                    i.otherwise.nodes(out);
                }
                Stage::Map(m) => m.body.nodes(out),
            }
        }
    }
}

/// A workflow's `#[defaults(...)]`, in nanoseconds for durations.
#[derive(Default, Clone)]
pub(crate) struct Defaults {
    pub(crate) retries: Option<u32>,
    pub(crate) backoff_ns: Option<u64>,
    pub(crate) max_backoff_ns: Option<u64>,
    pub(crate) timeout_ns: Option<u64>,
}

/// `step => compensation` in `#[compensate(...)]`.
pub(crate) struct Compensation {
    /// The step undone (its name in the graph: node name or alias).
    pub(crate) step: syn::Ident,
    /// The node that undoes it; takes the step's output.
    pub(crate) node: syn::Path,
}
