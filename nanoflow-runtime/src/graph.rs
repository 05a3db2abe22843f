//! Run-time description of a workflow graph, and its Mermaid and DOT exports.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use axum::body::Bytes;

use crate::fingerprint::{Fingerprint, Fingerprints};
use crate::node::{Node, NodeError, NodeOptions};
use crate::trigger::TriggerDef;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One node occurrence in a workflow graph.
#[derive(Clone)]
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
    /// What the step is: a node, an `if` condition, or a workflow used as a node.
    pub kind: StepKind,
    /// Calls the node on JSON (how a node container runs it).
    pub call_json: JsonCall,
    /// The digest of the output type's JSON Schema, when it has one (see [`crate::fingerprint`]).
    pub output_shape: Option<Fingerprint>,
}

/// What a `signal(name: T, ..)` step waits for: the signal's type, checked on delivery.
#[derive(Clone, Copy)]
pub struct SignalDef {
    /// The Rust type of the signal's value.
    pub type_name: &'static str,
    /// Parses a delivered JSON value as the signal's type, saying where it does not fit.
    pub check: fn(&[u8]) -> Result<(), crate::error::InputError>,
    /// The JSON Schema of the signal's type, when it has one (the dashboard's form).
    pub schema: fn() -> Option<serde_json::Value>,
}

impl std::fmt::Debug for SignalDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalDef")
            .field("type_name", &self.type_name)
            .finish()
    }
}

/// A workflow's flow-control limit (`#[limit(..)]`): runs over it wait, durably and in
/// arrival order (status `queued`), until they may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// At most this many runs at once (per key when keyed): a run holds its slot from its start
    /// to its end, waits included.
    Concurrency(u32),
    /// Runs start at most `count` per `per` (per key when keyed).
    Rate {
        /// Starts allowed in each period.
        count: u32,
        /// The period.
        per: std::time::Duration,
    },
    /// A run starts only once this long passed without a newer run (of its key, when keyed):
    /// each newer run replaces the one waiting, which ends as `cancelled` (error `debounced`).
    Debounce(std::time::Duration),
}

/// A workflow's limits, their key and the runs' priority (what `#[limit(..)]` declares).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// The limits, as declared.
    pub limits: Vec<Limit>,
    /// The input field (a path of field names) whose value keys the limits: each value has
    /// limits of its own. `None`: one set of limits for the whole workflow.
    pub key: Option<&'static [&'static str]>,
    /// The input field (an integer) giving a run's priority: a queued run of higher priority
    /// starts first; equal priorities start in arrival order.
    pub priority: Option<&'static [&'static str]>,
}

impl Limits {
    /// Whether runs of this workflow go through the queue.
    pub fn any(&self) -> bool {
        !self.limits.is_empty()
    }

    /// The concurrency limit, if any.
    pub fn concurrency(&self) -> Option<u32> {
        self.limits.iter().find_map(|l| match l {
            Limit::Concurrency(n) => Some(*n),
            _ => None,
        })
    }

    /// The rate limit, if any.
    pub fn rate(&self) -> Option<(u32, std::time::Duration)> {
        self.limits.iter().find_map(|l| match l {
            Limit::Rate { count, per } => Some((*count, *per)),
            _ => None,
        })
    }

    /// The debounce window, if any.
    pub fn debounce(&self) -> Option<std::time::Duration> {
        self.limits.iter().find_map(|l| match l {
            Limit::Debounce(d) => Some(*d),
            _ => None,
        })
    }

    /// The key of a run with JSON `input` (`""` when the limits are not keyed): the field's
    /// text for a string, its JSON for anything else.
    pub fn key_of(&self, input: &serde_json::Value) -> String {
        match self.key {
            None => String::new(),
            Some(path) => field_text(input, path),
        }
    }

    /// The priority of a run with JSON `input` (0 without a priority field).
    pub fn priority_of(&self, input: &serde_json::Value) -> i64 {
        let Some(path) = self.priority else {
            return 0;
        };
        let mut v = input;
        for part in path {
            match v.get(part) {
                Some(next) => v = next,
                None => return 0,
            }
        }
        v.as_i64()
            .or_else(|| v.as_u64().map(|u| u.min(i64::MAX as u64) as i64))
            .unwrap_or(0)
    }
}

/// The text of the field at `path` in `input`, as `ToString` would write it in Rust.
fn field_text(input: &serde_json::Value, path: &[&str]) -> String {
    let mut v = input;
    for part in path {
        match v.get(part) {
            Some(next) => v = next,
            None => return String::new(),
        }
    }
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A node called on JSON: input and (for a stateful node) state in, output and state out.
pub type JsonCall =
    fn(Bytes, Option<Bytes>) -> BoxFuture<'static, Result<(Bytes, Option<Bytes>), NodeError>>;

/// The [`JsonCall`] of a step that is not a node (a signal, a sleep): never called.
fn not_callable(
    _: Bytes,
    _: Option<Bytes>,
) -> BoxFuture<'static, Result<(Bytes, Option<Bytes>), NodeError>> {
    Box::pin(async { Err(NodeError::permanent("a signal or sleep step is not a node")) })
}

/// [`JsonCall`] for node `N`.
fn call_json<N: Node>(
    input: Bytes,
    state: Option<Bytes>,
) -> BoxFuture<'static, Result<(Bytes, Option<Bytes>), NodeError>> {
    Box::pin(async move {
        let input: N::Input = serde_json::from_slice(&input).map_err(|e| {
            NodeError::permanent(format!("the input does not fit node `{}`: {e}", N::NAME))
        })?;
        let encode = |what: &str, r: serde_json::Result<Vec<u8>>| {
            r.map(Bytes::from).map_err(|e| {
                NodeError::permanent(format!(
                    "the {what} of node `{}` does not serialize: {e}",
                    N::NAME
                ))
            })
        };
        if N::STATEFUL {
            let current: N::State = match state {
                Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    NodeError::permanent(format!("the state does not fit node `{}`: {e}", N::NAME))
                })?,
                None => N::State::default(),
            };
            let (result, next) = N::call_with_state(input, current).await;
            let output = result?;
            Ok((
                encode("output", serde_json::to_vec(&output))?,
                Some(encode("state", serde_json::to_vec(&next))?),
            ))
        } else {
            let output = N::call(input).await?;
            Ok((encode("output", serde_json::to_vec(&output))?, None))
        }
    })
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
            call_json: call_json::<N>,
            output_shape: None,
            kind: match N::subgraph() {
                Some(graph) => StepKind::Workflow(graph),
                None => StepKind::Node,
            },
        }
    }

    /// Describes node `N` used as the condition of an `if` (it returns `bool`).
    pub fn condition<N: Node>(name: &'static str) -> Self {
        Step {
            kind: StepKind::Condition,
            ..Self::of::<N>(name)
        }
    }

    /// A `signal(name: T, timeout = ..)` step taking `In`: it waits (durably, holding no task)
    /// until signal `name` is delivered, or until its timeout, and passes on `(In, T)` — with
    /// a timeout, `(In, Option<T>)`, `None` when it expired.
    pub fn signal<In: ?Sized, T: crate::node::Data>(
        name: &'static str,
        timeout: Option<std::time::Duration>,
        schema: fn() -> Option<serde_json::Value>,
    ) -> Self {
        Step {
            name,
            node: "signal",
            input_type: std::any::type_name::<In>(),
            output_type: if timeout.is_some() {
                std::any::type_name::<Option<T>>()
            } else {
                std::any::type_name::<T>()
            },
            options: NodeOptions::DEFAULT,
            kind: StepKind::Signal {
                timeout,
                signal: SignalDef {
                    type_name: std::any::type_name::<T>(),
                    check: |bytes| crate::json::parse_json::<T>(bytes).map(|_| ()),
                    schema,
                },
            },
            call_json: not_callable,
            output_shape: None,
        }
    }

    /// A `sleep("10m")` step taking and passing on `T`: it waits `duration` (durably: a
    /// restart resumes it at its due time).
    pub fn sleep<T: ?Sized>(name: &'static str, duration: std::time::Duration) -> Self {
        Step {
            name,
            node: "sleep",
            input_type: std::any::type_name::<T>(),
            output_type: std::any::type_name::<T>(),
            options: NodeOptions::DEFAULT,
            kind: StepKind::Sleep(duration),
            call_json: not_callable,
            output_shape: None,
        }
    }

    /// Whether the step is a node the runner calls (not a signal or a sleep).
    pub fn is_node(&self) -> bool {
        !matches!(self.kind, StepKind::Signal { .. } | StepKind::Sleep(_))
    }

    /// With the JSON Schema of its output type (what `workflow!` finds when the type implements
    /// `schemars::JsonSchema`): its digest is part of the step's output fingerprint.
    pub fn with_output_schema(mut self, schema: Option<serde_json::Value>) -> Self {
        self.output_shape = schema.as_ref().map(crate::fingerprint::schema_digest);
        self
    }

    /// The sub-workflow's graph, when this step is a workflow used as a node.
    pub fn subgraph(&self) -> Option<&'static Graph> {
        match self.kind {
            StepKind::Workflow(graph) => Some(graph),
            _ => None,
        }
    }
}

/// What a [`Step`] runs.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum StepKind {
    /// A `#[node]` function.
    Node,
    /// A node returning `bool` that chooses the branch of an `if`: its outgoing edges are
    /// labelled `true` and `false`, and each branch takes the value the condition looked at.
    Condition,
    /// A workflow used as a node (a sub-workflow): its steps run inside the parent's run and
    /// are journaled as `step/inner_step`.
    Workflow(&'static Graph),
    /// `signal(name: T, timeout = ..)`: waits for a signal delivered to the run.
    Signal {
        /// How long it waits before passing on `None`; `None`: as long as it takes.
        timeout: Option<std::time::Duration>,
        /// The signal's type.
        signal: SignalDef,
    },
    /// `sleep(..)`: waits this long, then passes its input on.
    Sleep(std::time::Duration),
}

impl StepKind {
    /// `node`, `condition`, `workflow`, `signal` or `sleep`.
    pub fn as_str(&self) -> &'static str {
        match self {
            StepKind::Node => "node",
            StepKind::Condition => "condition",
            StepKind::Workflow(_) => "workflow",
            StepKind::Signal { .. } => "signal",
            StepKind::Sleep(_) => "sleep",
        }
    }
}

/// A `map(..)` in a graph: its steps run once per item of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDef {
    /// The steps run for each item (indices into [`Graph::steps`]), in written order.
    pub steps: Vec<usize>,
    /// How many items run at once.
    pub concurrency: usize,
    /// Whether a failed item is collected as an `Err` (`map(.., collect_errors)`) instead of
    /// failing the run.
    pub collect_errors: bool,
}

impl MapDef {
    /// A map over `steps`, `concurrency` items at a time (what `workflow!` emits).
    pub fn new(steps: Vec<usize>, concurrency: usize, collect_errors: bool) -> Self {
        Self {
            steps,
            concurrency,
            collect_errors,
        }
    }
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("node", &self.node)
            .field("input_type", &self.input_type)
            .field("output_type", &self.output_type)
            .field("options", &self.options)
            .finish()
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
    /// Labels of the edges that choose a branch: the variant of a `match` arm (`Approved`), or
    /// `true` / `false` out of an `if` condition. Edges not listed have no label.
    pub labels: Vec<(Endpoint, Endpoint, &'static str)>,
    /// The `map(..)`s, outermost first.
    pub maps: Vec<MapDef>,
    /// What starts the workflow.
    pub triggers: Vec<TriggerDef>,
    /// The Rust type of the workflow's input.
    pub input_type: &'static str,
    /// The Rust type of the workflow's output.
    pub output_type: &'static str,
    /// The workflow whose runs this one finishes (`#[finishes(..)]`), if any.
    finishes: Option<&'static str>,
    /// Its `#[limit(..)]`s.
    pub limits: Limits,
    /// The whole run's time limit (`#[timeout("1h")]`), counted from the run's creation.
    pub timeout: Option<std::time::Duration>,
    /// The fingerprints, computed on first use.
    prints: OnceLock<Fingerprints>,
}

impl Graph {
    /// An empty graph called `name`, from workflow input type `I` to output type `O`; the
    /// `with_*` setters fill it. `workflow!` builds every graph this way, never as a literal,
    /// so that a new field does not break expansions.
    ///
    /// ```
    /// let g = nanoflow_runtime::Graph::new::<u32, String>("demo").with_doc("A demo.");
    /// assert_eq!((g.name, g.doc, g.input_type), ("demo", "A demo.", "u32"));
    /// ```
    pub fn new<I: ?Sized, O: ?Sized>(name: &'static str) -> Self {
        Self {
            name,
            doc: "",
            steps: Vec::new(),
            edges: Vec::new(),
            labels: Vec::new(),
            maps: Vec::new(),
            triggers: Vec::new(),
            input_type: std::any::type_name::<I>(),
            output_type: std::any::type_name::<O>(),
            finishes: None,
            limits: Limits::default(),
            timeout: None,
            prints: OnceLock::new(),
        }
    }

    /// With its `#[limit(..)]`s: `limits`, keyed by the input field `key`, prioritized by the
    /// input field `priority`.
    pub fn with_limits(
        mut self,
        limits: Vec<Limit>,
        key: Option<&'static [&'static str]>,
        priority: Option<&'static [&'static str]>,
    ) -> Self {
        self.limits = Limits {
            limits,
            key,
            priority,
        };
        self
    }

    /// With the whole run's time limit (`#[timeout("1h")]`).
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The signals its runs wait for: `(step name, timeout, type)`.
    pub fn signals(
        &self,
    ) -> impl Iterator<Item = (&'static str, Option<std::time::Duration>, SignalDef)> + '_ {
        self.steps.iter().filter_map(|s| match s.kind {
            StepKind::Signal { timeout, signal } => Some((s.name, timeout, signal)),
            _ => None,
        })
    }

    /// Marks it as the graph kept to finish the runs that workflow `name` recorded with this
    /// graph's fingerprint (`#[finishes(name)]`, see `docs/deploys.md`): it has no trigger,
    /// and its fingerprint is computed under `name`.
    pub fn with_finishes(mut self, name: &'static str) -> Self {
        self.finishes = Some(name);
        self
    }

    /// The workflow whose runs this one finishes, if any.
    pub fn finishes(&self) -> Option<&'static str> {
        self.finishes
    }

    /// The fingerprints of the workflow and of each of its steps (see [`crate::fingerprint`]).
    ///
    /// ```
    /// let a = nanoflow_runtime::Graph::new::<u32, String>("demo");
    /// let b = nanoflow_runtime::Graph::new::<u64, String>("demo");
    /// assert_ne!(a.fingerprint(), b.fingerprint());
    /// ```
    pub fn fingerprints(&self) -> &Fingerprints {
        self.prints.get_or_init(|| Fingerprints::of(self))
    }

    /// The workflow's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprints().workflow
    }

    /// With the doc comment written above the workflow.
    pub fn with_doc(mut self, doc: &'static str) -> Self {
        self.doc = doc;
        self
    }

    /// With its steps, in written order.
    pub fn with_steps(mut self, steps: Vec<Step>) -> Self {
        self.steps = steps;
        self
    }

    /// With its data-flow edges.
    pub fn with_edges(mut self, edges: Vec<(Endpoint, Endpoint)>) -> Self {
        self.edges = edges;
        self
    }

    /// With the labels of the edges that choose a branch.
    pub fn with_labels(mut self, labels: Vec<(Endpoint, Endpoint, &'static str)>) -> Self {
        self.labels = labels;
        self
    }

    /// With its `map(..)`s, outermost first.
    pub fn with_maps(mut self, maps: Vec<MapDef>) -> Self {
        self.maps = maps;
        self
    }

    /// With its triggers.
    pub fn with_triggers(mut self, triggers: Vec<TriggerDef>) -> Self {
        self.triggers = triggers;
        self
    }

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

    /// The label of the edge `from -> to`: a `match` arm's variant, or `true` / `false` out of
    /// an `if` condition.
    pub fn label(&self, from: Endpoint, to: Endpoint) -> Option<&'static str> {
        self.labels
            .iter()
            .find(|(a, b, _)| *a == from && *b == to)
            .map(|(_, _, label)| *label)
    }

    /// The innermost `map(..)` running step `index` for each item, if any.
    pub fn map_of(&self, index: usize) -> Option<usize> {
        // Maps are listed outermost first, so the last one holding the step is the innermost.
        self.maps.iter().rposition(|m| m.steps.contains(&index))
    }

    /// The map directly around map `m`, if any.
    fn parent_map(&self, m: usize) -> Option<usize> {
        let first = *self.maps[m].steps.first()?;
        self.maps[..m]
            .iter()
            .rposition(|outer| outer.steps.contains(&first))
    }

    /// What is drawn directly inside `container` (a map, or the whole graph for `None`), in
    /// written order: steps, and the maps nested one level down.
    fn children(&self, container: Option<usize>) -> Vec<Child> {
        let mut out = Vec::new();
        for i in 0..self.steps.len() {
            let mut map = self.map_of(i);
            if map == container {
                out.push(Child::Step(i));
                continue;
            }
            // The map holding step `i` directly inside `container`, drawn at its first step.
            while let Some(m) = map {
                let parent = self.parent_map(m);
                if parent == container {
                    if self.maps[m].steps.first() == Some(&i) {
                        out.push(Child::Map(m));
                    }
                    break;
                }
                map = parent;
            }
        }
        out
    }

    fn node_label(&self, end: Endpoint) -> String {
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

    fn map_caption(&self, m: usize) -> String {
        let map = &self.maps[m];
        let mut caption = format!("map: each item, {} at a time", map.concurrency);
        if map.collect_errors {
            caption.push_str(", errors collected");
        }
        caption
    }

    /// The graph as a Mermaid flowchart (paste into any Markdown viewer that renders Mermaid).
    ///
    /// An `if` condition is a diamond, a sub-workflow a double-sided box, the steps of a
    /// `map(..)` sit in a box captioned with its concurrency, and the edges choosing a branch
    /// carry its label.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        let _ = writeln!(
            out,
            "    input([\"{}\"])",
            mermaid_escape(&short_type(self.input_type))
        );
        self.mermaid_children(&mut out, None, 1);
        let _ = writeln!(
            out,
            "    output([\"{}\"])",
            mermaid_escape(&short_type(self.output_type))
        );
        for (from, to) in &self.edges {
            match self.label(*from, *to) {
                None => {
                    let _ = writeln!(out, "    {} --> {}", Self::id(*from), Self::id(*to));
                }
                Some(label) => {
                    let _ = writeln!(
                        out,
                        "    {} -->|\"{}\"| {}",
                        Self::id(*from),
                        mermaid_escape(label),
                        Self::id(*to)
                    );
                }
            }
        }
        out
    }

    fn mermaid_children(&self, out: &mut String, container: Option<usize>, depth: usize) {
        let pad = "    ".repeat(depth);
        for child in self.children(container) {
            match child {
                Child::Step(i) => {
                    let step = &self.steps[i];
                    let label = if step.name == step.node {
                        step.name.to_owned()
                    } else {
                        format!("{} ({})", step.name, step.node)
                    };
                    let label = mermaid_escape(&label);
                    let _ = match step.kind {
                        StepKind::Condition => writeln!(out, "{pad}s{i}{{\"{label}\"}}"),
                        StepKind::Workflow(_) => writeln!(out, "{pad}s{i}[[\"{label}\"]]"),
                        StepKind::Signal { .. } | StepKind::Sleep(_) => {
                            writeln!(out, "{pad}s{i}([\"{label}\"])")
                        }
                        StepKind::Node => writeln!(out, "{pad}s{i}[\"{label}\"]"),
                    };
                }
                Child::Map(m) => {
                    let _ = writeln!(
                        out,
                        "{pad}subgraph m{m} [\"{}\"]",
                        mermaid_escape(&self.map_caption(m))
                    );
                    self.mermaid_children(out, Some(m), depth + 1);
                    let _ = writeln!(out, "{pad}end");
                }
            }
        }
    }

    /// The graph in Graphviz DOT (`dot -Tsvg`), drawn like [`Graph::to_mermaid`].
    pub fn to_dot(&self) -> String {
        let mut out = format!("digraph \"{}\" {{\n    rankdir=LR;\n", escape(self.name));
        let _ = writeln!(
            out,
            "    input [shape=oval, label=\"input: {}\"];",
            escape(&short_type(self.input_type))
        );
        self.dot_children(&mut out, None, 1);
        let _ = writeln!(
            out,
            "    output [shape=oval, label=\"output: {}\"];",
            escape(&short_type(self.output_type))
        );
        for (from, to) in &self.edges {
            match self.label(*from, *to) {
                None => {
                    let _ = writeln!(out, "    {} -> {};", Self::id(*from), Self::id(*to));
                }
                Some(label) => {
                    let _ = writeln!(
                        out,
                        "    {} -> {} [label=\"{}\"];",
                        Self::id(*from),
                        Self::id(*to),
                        escape(label)
                    );
                }
            }
        }
        out.push_str("}\n");
        out
    }

    fn dot_children(&self, out: &mut String, container: Option<usize>, depth: usize) {
        let pad = "    ".repeat(depth);
        for child in self.children(container) {
            match child {
                Child::Step(i) => {
                    let step = &self.steps[i];
                    let shape = match step.kind {
                        StepKind::Condition => "shape=diamond",
                        StepKind::Workflow(_) => "shape=box, peripheries=2",
                        StepKind::Signal { .. } | StepKind::Sleep(_) => "shape=box, style=rounded",
                        StepKind::Node => "shape=box",
                    };
                    let _ = writeln!(
                        out,
                        "{pad}s{i} [{shape}, label=\"{}\\n{} -> {}\"];",
                        escape(step.name),
                        escape(&short_type(step.input_type)),
                        escape(&short_type(step.output_type))
                    );
                }
                Child::Map(m) => {
                    let _ = writeln!(out, "{pad}subgraph cluster_m{m} {{");
                    let _ = writeln!(
                        out,
                        "{pad}    label=\"{}\";\n{pad}    style=dashed;",
                        escape(&self.map_caption(m))
                    );
                    self.dot_children(out, Some(m), depth + 1);
                    let _ = writeln!(out, "{pad}}}");
                }
            }
        }
    }

    /// A one-line summary of each edge, e.g. `price -> tax`, or `review -> ship [Approved]`
    /// for an edge choosing a branch.
    pub fn edges_text(&self) -> Vec<String> {
        self.edges
            .iter()
            .map(|(a, b)| {
                let text = format!("{} -> {}", self.node_label(*a), self.node_label(*b));
                match self.label(*a, *b) {
                    Some(label) => format!("{text} [{label}]"),
                    None => text,
                }
            })
            .collect()
    }
}

/// A step or a nested map, when drawing.
enum Child {
    Step(usize),
    Map(usize),
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

/// A label inside a Mermaid `"..."`, where `<` and `>` would be read as HTML (`Vec<Claim>` would
/// show as `Vec`): written as Mermaid's entity codes.
fn mermaid_escape(s: &str) -> String {
    escape(s).replace('<', "#lt;").replace('>', "#gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &'static str, kind: StepKind) -> Step {
        Step {
            name,
            node: name,
            input_type: "alloc::vec::Vec<u64>",
            output_type: "u64",
            options: NodeOptions::DEFAULT,
            kind,
            call_json: |_, _| {
                Box::pin(async { Err(NodeError::permanent("not callable in this test")) })
            },
            output_shape: None,
        }
    }

    /// `split -> map(score -> map(part)) -> if big { a } else { b }`, by hand.
    fn sample() -> Graph {
        use Endpoint::*;
        Graph {
            name: "sample",
            doc: "",
            steps: vec![
                step("split", StepKind::Node),
                step("score", StepKind::Node),
                step("part", StepKind::Node),
                step("big", StepKind::Condition),
                step("a", StepKind::Node),
                step("b", StepKind::Node),
            ],
            edges: vec![
                (Input, Step(0)),
                (Step(0), Step(1)),
                (Step(1), Step(2)),
                (Step(2), Step(3)),
                (Step(3), Step(4)),
                (Step(3), Step(5)),
                (Step(4), Output),
                (Step(5), Output),
            ],
            labels: vec![(Step(3), Step(4), "true"), (Step(3), Step(5), "false")],
            maps: vec![
                MapDef {
                    steps: vec![1, 2],
                    concurrency: 4,
                    collect_errors: false,
                },
                MapDef {
                    steps: vec![2],
                    concurrency: 16,
                    collect_errors: true,
                },
            ],
            triggers: Vec::new(),
            input_type: "alloc::vec::Vec<u64>",
            output_type: "u64",
            finishes: None,
            limits: Limits::default(),
            timeout: None,
            prints: OnceLock::new(),
        }
    }

    #[test]
    fn mermaid_nests_maps_labels_branches_and_escapes_types() {
        let mermaid = sample().to_mermaid();
        let expected = r#"flowchart LR
    input(["Vec#lt;u64#gt;"])
    s0["split"]
    subgraph m0 ["map: each item, 4 at a time"]
        s1["score"]
        subgraph m1 ["map: each item, 16 at a time, errors collected"]
            s2["part"]
        end
    end
    s3{"big"}
    s4["a"]
    s5["b"]
    output(["u64"])
    input --> s0
    s0 --> s1
    s1 --> s2
    s2 --> s3
    s3 -->|"true"| s4
    s3 -->|"false"| s5
    s4 --> output
    s5 --> output
"#;
        assert_eq!(mermaid, expected);
    }

    #[test]
    fn dot_draws_clusters_diamonds_and_labels() {
        let dot = sample().to_dot();
        assert!(dot.contains("    subgraph cluster_m0 {\n        label=\"map: each item, 4 at a time\";\n        style=dashed;\n        s1 [shape=box"), "{dot}");
        assert!(dot.contains("        subgraph cluster_m1 {"), "{dot}");
        assert!(
            dot.contains("    s3 [shape=diamond, label=\"big\\nVec<u64> -> u64\"];"),
            "{dot}"
        );
        assert!(dot.contains("    s3 -> s4 [label=\"true\"];"), "{dot}");
        let g = sample();
        assert_eq!(g.map_of(2), Some(1));
        assert_eq!(g.map_of(1), Some(0));
        assert_eq!(g.map_of(3), None);
        assert_eq!(g.label(Endpoint::Step(3), Endpoint::Step(5)), Some("false"));
        assert!(g.edges_text().contains(&"big -> b [false]".to_owned()));
    }

    #[test]
    fn short_type_strips_paths() {
        assert_eq!(short_type("alloc::string::String"), "String");
        assert_eq!(short_type("(u64, my::Priced)"), "(u64, Priced)");
        assert_eq!(short_type("alloc::vec::Vec<a::B>"), "Vec<B>");
    }
}
