//! Run-time description of a workflow graph, and its Mermaid and DOT exports.

use std::fmt::Write as _;

use crate::node::{Node, NodeOptions};
use crate::triggers::TriggerDef;

/// One node occurrence in a workflow graph.
#[derive(Debug, Clone)]
pub struct Step {
    /// The step's name in this graph: the node's name, or its alias (`charge as retry_charge`).
    pub name: &'static str,
    /// The node's own name (`Node::NAME`).
    pub node: &'static str,
    /// The Rust type the node takes.
    pub input_type: &'static str,
    /// The Rust type the node returns.
    pub output_type: &'static str,
    /// The node's `#[node(...)]` settings.
    pub options: NodeOptions,
}

impl Step {
    /// Describes an occurrence of node `N` named `name`.
    pub fn of<N: Node>(name: &'static str) -> Self {
        Step {
            name,
            node: N::NAME,
            input_type: std::any::type_name::<N::Input>(),
            output_type: std::any::type_name::<N::Output>(),
            options: N::OPTIONS,
        }
    }
}

/// One end of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// The workflow's input (the trigger's payload).
    Input,
    /// The step at this index of [`Graph::steps`].
    Step(usize),
    /// The workflow's output.
    Output,
}

/// A workflow's graph: steps, edges, triggers and types, as `workflow!` declared them.
#[derive(Debug, Clone)]
pub struct Graph {
    /// The workflow's name.
    pub name: &'static str,
    /// The doc comment written above the workflow.
    pub doc: &'static str,
    /// Every node occurrence, in written order.
    pub steps: Vec<Step>,
    /// Data-flow edges, from producer to consumer.
    pub edges: Vec<(Endpoint, Endpoint)>,
    /// What starts the workflow.
    pub triggers: Vec<TriggerDef>,
    /// The Rust type of the workflow's input.
    pub input_type: &'static str,
    /// The Rust type of the workflow's output.
    pub output_type: &'static str,
}

impl Graph {
    /// The step with this name, if any.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Whether step `name` feeds only the workflow's output (no step runs after it).
    pub fn is_terminal(&self, name: &str) -> bool {
        let Some(index) = self.steps.iter().position(|s| s.name == name) else {
            return false;
        };
        self.edges
            .iter()
            .filter(|(from, _)| *from == Endpoint::Step(index))
            .all(|(_, to)| *to == Endpoint::Output)
    }

    fn label(&self, end: Endpoint) -> String {
        match end {
            Endpoint::Input => "input".to_owned(),
            Endpoint::Output => "output".to_owned(),
            Endpoint::Step(i) => self.steps[i].name.to_owned(),
        }
    }

    fn id(end: Endpoint) -> String {
        match end {
            Endpoint::Input => "input".to_owned(),
            Endpoint::Output => "output".to_owned(),
            Endpoint::Step(i) => format!("s{i}"),
        }
    }

    /// The graph as a Mermaid flowchart (paste into any Markdown viewer that renders Mermaid).
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        let _ = writeln!(
            out,
            "    input([\"{}\"])",
            escape(&short_type(self.input_type))
        );
        for (i, step) in self.steps.iter().enumerate() {
            let label = if step.name == step.node {
                step.name.to_owned()
            } else {
                format!("{} ({})", step.name, step.node)
            };
            let _ = writeln!(out, "    s{i}[\"{}\"]", escape(&label));
        }
        let _ = writeln!(
            out,
            "    output([\"{}\"])",
            escape(&short_type(self.output_type))
        );
        for (from, to) in &self.edges {
            let _ = writeln!(out, "    {} --> {}", Self::id(*from), Self::id(*to));
        }
        out
    }

    /// The graph in Graphviz DOT (`dot -Tsvg`).
    pub fn to_dot(&self) -> String {
        let mut out = format!("digraph \"{}\" {{\n    rankdir=LR;\n", escape(self.name));
        let _ = writeln!(
            out,
            "    input [shape=oval, label=\"input: {}\"];",
            escape(&short_type(self.input_type))
        );
        for (i, step) in self.steps.iter().enumerate() {
            let _ = writeln!(
                out,
                "    s{i} [shape=box, label=\"{}\\n{} -> {}\"];",
                escape(step.name),
                escape(&short_type(step.input_type)),
                escape(&short_type(step.output_type))
            );
        }
        let _ = writeln!(
            out,
            "    output [shape=oval, label=\"output: {}\"];",
            escape(&short_type(self.output_type))
        );
        for (from, to) in &self.edges {
            let _ = writeln!(out, "    {} -> {};", Self::id(*from), Self::id(*to));
        }
        out.push_str("}\n");
        out
    }

    /// A one-line summary of the data flow, e.g. `price -> (tax, shipping) -> total`.
    pub fn edges_text(&self) -> Vec<String> {
        self.edges
            .iter()
            .map(|(a, b)| format!("{} -> {}", self.label(*a), self.label(*b)))
            .collect()
    }
}

/// `alloc::string::String` -> `String`, `(u64, my::Priced)` -> `(u64, Priced)`.
pub fn short_type(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut ident = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            ident.push(c);
        } else {
            out.push_str(ident.rsplit("::").next().unwrap_or(""));
            ident.clear();
            out.push(c);
        }
    }
    out.push_str(ident.rsplit("::").next().unwrap_or(""));
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::short_type;

    #[test]
    fn short_type_strips_paths() {
        assert_eq!(short_type("alloc::string::String"), "String");
        assert_eq!(short_type("(u64, my::Priced)"), "(u64, Priced)");
        assert_eq!(short_type("alloc::vec::Vec<a::B>"), "Vec<B>");
    }
}
