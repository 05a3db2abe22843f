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
    /// `#[limit(..)]`s, merged (each option at most once per workflow).
    pub(crate) limits: Limits,
    /// `#[timeout("1h")]`: the whole run's time limit, in nanoseconds.
    pub(crate) timeout: Option<(u64, Span)>,
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
    /// `match {}`, starts with a `match` or a wait, or has a wait where its input's type cannot
    /// be named.
    pub(crate) fn is_broken(&self) -> bool {
        match &self.graph {
            None => true,
            Some(graph) => {
                graph.stages.is_empty()
                    || graph.has_empty_group()
                    || graph.leading_match().is_some()
                    || graph.leading_wait().is_some()
                    || !graph.misplaced_waits(true, false).is_empty()
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
    /// `signal(approval: Approval, timeout = "3d")`: waits for a value sent to the run.
    Signal(Signal),
    /// `sleep("10m")`: waits, then passes its input on.
    Sleep(Sleep),
}

/// `signal(name: Type)` or `signal(name: Type, timeout = "3d")`.
pub(crate) struct Signal {
    /// The `signal` keyword.
    pub(crate) keyword: syn::Ident,
    /// The `( .. )` around its arguments.
    pub(crate) paren: Span,
    /// The step's name, and the signal's (`POST /runs/{id}/signals/{name}`).
    pub(crate) name: syn::Ident,
    /// The type of the value it waits for.
    pub(crate) ty: syn::Type,
    /// `timeout = "3d"`: the literal (checked by `validate`).
    pub(crate) timeout: Option<syn::LitStr>,
}

/// `sleep("10m")` or `sleep("10m") as pause`.
pub(crate) struct Sleep {
    /// The `sleep` keyword.
    pub(crate) keyword: syn::Ident,
    /// The duration as written (checked by `validate`).
    pub(crate) duration: syn::LitStr,
    /// The alias, or `sleep`, `sleep_2`, .. in written order (set once the graph is read).
    pub(crate) name: syn::Ident,
    /// Whether the name is the user's alias.
    pub(crate) aliased: bool,
}

impl Signal {
    /// The timeout in nanoseconds, when valid (`validate` reports it otherwise).
    pub(crate) fn timeout_ns(&self) -> Option<u64> {
        self.timeout
            .as_ref()
            .and_then(|lit| crate::duration::parse(&lit.value()).ok())
    }
}

impl Sleep {
    /// The duration in nanoseconds (0 when invalid: `validate` reports it).
    pub(crate) fn duration_ns(&self) -> u64 {
        crate::duration::parse(&self.duration.value()).unwrap_or(0)
    }
}

/// A step of the graph with a name of its own, in written order.
pub(crate) enum StepRef<'a> {
    Node(&'a NodeRef),
    Signal(&'a Signal),
    Sleep(&'a Sleep),
}

impl<'a> StepRef<'a> {
    /// The step's name in the graph, as the user's token.
    pub(crate) fn ident(&self) -> &'a syn::Ident {
        match self {
            StepRef::Node(n) => n.step_ident(),
            StepRef::Signal(s) => &s.name,
            StepRef::Sleep(s) => &s.name,
        }
    }
}

/// A workflow's `#[limit(..)]`s: the limits in written order, their key and the priority field.
#[derive(Default)]
pub(crate) struct Limits {
    pub(crate) limits: Vec<(Limit, Span)>,
    /// `key = customer` / `key = "customer.id"`.
    pub(crate) key: Option<FieldPath>,
    /// `priority = tier`.
    pub(crate) priority: Option<FieldPath>,
}

/// One limit, durations in nanoseconds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Concurrency(u32),
    Rate { count: u32, per_ns: u64 },
    Debounce(u64),
}

impl Limit {
    /// Its option's name in `#[limit(..)]`.
    pub(crate) fn option(&self) -> &'static str {
        match self {
            Limit::Concurrency(_) => "concurrency",
            Limit::Rate { .. } => "rate",
            Limit::Debounce(_) => "debounce",
        }
    }
}

/// An input field named by `key = customer` or `key = "customer.id"`: its path, and the user's
/// token (where a missing field is reported).
#[derive(Clone)]
pub(crate) struct FieldPath {
    pub(crate) members: Vec<syn::Member>,
    pub(crate) span: Span,
}

impl FieldPath {
    /// `customer.id`, for messages and for the runtime's path.
    pub(crate) fn parts(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| match m {
                syn::Member::Named(i) => i.to_string(),
                syn::Member::Unnamed(i) => i.index.to_string(),
            })
            .collect()
    }
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
            Stage::Signal(_) | Stage::Sleep(_) => None,
        }
    }

    /// The `signal` or `sleep` keyword when one is the first step of the chain (of its first
    /// branch for a group, of its body for a `map`): its input would be the chain's input,
    /// whose type no node names.
    pub(crate) fn leading_wait(&self) -> Option<&syn::Ident> {
        match self.stages.first()? {
            Stage::Signal(s) => Some(&s.keyword),
            Stage::Sleep(s) => Some(&s.keyword),
            Stage::Group { branches, .. } => branches.first()?.leading_wait(),
            Stage::Map(m) => m.body.leading_wait(),
            Stage::Node(_) | Stage::If(_) | Stage::Match(_) => None,
        }
    }

    /// The `signal`s and `sleep`s placed where they cannot run, with the reason: inside a
    /// `map(..)`, or where their input's type cannot be named (first in the arm of a `match`
    /// binding fields). `named`: whether the chain's input type can be named.
    pub(crate) fn misplaced_waits(
        &self,
        mut named: bool,
        in_map: bool,
    ) -> Vec<(&syn::Ident, Misplaced)> {
        let mut out = Vec::new();
        for stage in &self.stages {
            match stage {
                Stage::Signal(Signal { keyword, .. }) | Stage::Sleep(Sleep { keyword, .. }) => {
                    if in_map {
                        out.push((keyword, Misplaced::InMap));
                    } else if !named {
                        out.push((keyword, Misplaced::Unnamed));
                    }
                }
                Stage::Node(_) => {}
                Stage::Group { branches, .. } => {
                    for b in branches {
                        out.extend(b.misplaced_waits(named, in_map));
                    }
                }
                Stage::Match(m) => {
                    for arm in &m.arms {
                        let takes = match &arm.pattern {
                            Pattern::Wild(_) => named,
                            Pattern::Variant { .. } => arm.pattern.bindings().is_empty(),
                        };
                        out.extend(arm.body.misplaced_waits(takes, in_map));
                    }
                }
                Stage::If(i) => {
                    out.extend(i.then.misplaced_waits(named, in_map));
                    out.extend(i.otherwise.misplaced_waits(named, in_map));
                }
                Stage::Map(m) => out.extend(m.body.misplaced_waits(named, true)),
            }
            named = true;
        }
        out
    }

    /// The `match` reached first from the chain's input, if any: it would have to match the
    /// chain's input, whose type no step names.
    pub(crate) fn leading_match(&self) -> Option<&Match> {
        match self.stages.first()? {
            Stage::Match(m) => Some(m),
            Stage::Group { branches, .. } => branches.iter().find_map(Chain::leading_match),
            Stage::Map(m) => m.body.leading_match(),
            Stage::Node(_) | Stage::If(_) | Stage::Signal(_) | Stage::Sleep(_) => None,
        }
    }

    /// Whether any parallel group, at any depth, is an empty `()`, or any `match` has no arm.
    pub(crate) fn has_empty_group(&self) -> bool {
        self.stages.iter().any(|stage| match stage {
            Stage::Node(_) | Stage::Signal(_) | Stage::Sleep(_) => false,
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
            Stage::Signal(s) => Some(s.paren),
            Stage::Sleep(s) => Some(s.name.span()),
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
                Stage::Signal(_) | Stage::Sleep(_) => {}
            }
        }
    }

    /// Every step with a name, nodes and waits, in written order (the order of the graph's
    /// steps).
    pub(crate) fn steps<'a>(&'a self, out: &mut Vec<StepRef<'a>>) {
        for stage in &self.stages {
            match stage {
                Stage::Node(n) => out.push(StepRef::Node(n)),
                Stage::Group { branches, .. } => branches.iter().for_each(|b| b.steps(out)),
                Stage::Match(m) => m.arms.iter().for_each(|a| a.body.steps(out)),
                Stage::If(i) => {
                    out.push(StepRef::Node(&i.cond));
                    i.then.steps(out);
                    i.otherwise.steps(out);
                }
                Stage::Map(m) => m.body.steps(out),
                Stage::Signal(s) => out.push(StepRef::Signal(s)),
                Stage::Sleep(s) => out.push(StepRef::Sleep(s)),
            }
        }
    }

    /// Names the `sleep`s without an alias `sleep`, `sleep_2`, .. in written order.
    pub(crate) fn name_sleeps(&mut self, count: &mut usize) {
        for stage in &mut self.stages {
            match stage {
                Stage::Node(_) | Stage::Signal(_) => {}
                Stage::Group { branches, .. } => {
                    branches.iter_mut().for_each(|b| b.name_sleeps(count))
                }
                Stage::Match(m) => m.arms.iter_mut().for_each(|a| a.body.name_sleeps(count)),
                Stage::If(i) => {
                    i.then.name_sleeps(count);
                    i.otherwise.name_sleeps(count);
                }
                Stage::Map(m) => m.body.name_sleeps(count),
                Stage::Sleep(s) => {
                    if !s.aliased {
                        *count += 1;
                        let name = match *count {
                            1 => "sleep".to_owned(),
                            n => format!("sleep_{n}"),
                        };
                        s.name = syn::Ident::new(&name, s.keyword.span());
                    }
                }
            }
        }
    }
}

/// Why a `signal` or `sleep` cannot be where it is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Misplaced {
    /// Inside a `map(..)`.
    InMap,
    /// Where the value's type cannot be named (first step of a `match` arm binding fields).
    Unnamed,
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
