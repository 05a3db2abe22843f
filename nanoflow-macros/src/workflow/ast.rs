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

    /// Whether the graph cannot be expanded: it failed to parse, is empty, or has an empty `()`.
    pub(crate) fn is_broken(&self) -> bool {
        match &self.graph {
            None => true,
            Some(graph) => graph.stages.is_empty() || graph.has_empty_group(),
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
    /// The leftmost node: the one whose input is the chain's input.
    pub(crate) fn entry(&self) -> Option<&NodeRef> {
        match self.stages.first()? {
            Stage::Node(n) => Some(n),
            Stage::Group { branches, .. } => branches.first()?.entry(),
        }
    }

    /// Whether any parallel group, at any depth, is an empty `()`.
    pub(crate) fn has_empty_group(&self) -> bool {
        self.stages.iter().any(|stage| match stage {
            Stage::Node(_) => false,
            Stage::Group { branches, .. } => {
                branches.is_empty() || branches.iter().any(Chain::has_empty_group)
            }
        })
    }

    /// The span of the last step, for errors about what follows the graph.
    pub(crate) fn end_span(&self) -> Option<Span> {
        match self.stages.last()? {
            Stage::Node(n) => Some(n.step_ident().span()),
            Stage::Group { paren, .. } => Some(*paren),
        }
    }

    /// Every node, in written order.
    pub(crate) fn nodes<'a>(&'a self, out: &mut Vec<&'a NodeRef>) {
        for stage in &self.stages {
            match stage {
                Stage::Node(n) => out.push(n),
                Stage::Group { branches, .. } => branches.iter().for_each(|b| b.nodes(out)),
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
