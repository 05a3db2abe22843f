//! Fingerprints of a workflow's graph and of each of its steps, recorded in the journal so that
//! a run recorded by one build resumes on another only where the recorded values still fit
//! (issue 13; `docs/deploys.md` says what counts as a change).
//!
//! - A step's **output fingerprint** digests the type its node returns, as serde sees it: the
//!   type's name without module paths (`Priced`, `Vec<Line>`, `(u64, u64)`: moving a type to
//!   another module or crate is no change, renaming it is) and, when the type implements
//!   `schemars::JsonSchema` (feature `schema`), the JSON Schema of what it serializes to,
//!   without descriptions and titles (doc comments are no change; a field added, removed,
//!   renamed or retyped is).
//! - A step's **place fingerprint** digests where it sits: its name, what kind of step it is,
//!   its input type (named as above), the steps (or the workflow's input) it takes its value
//!   from, and the `map(..)` around it. Which function implements it is not part of it.
//! - A workflow's fingerprint digests its name (for a workflow kept to finish another's runs,
//!   `#[finishes(..)]`, that workflow's name), all of its steps' fingerprints, its edges and
//!   its maps.
//!
//! The digest is FNV-1a over 64 bits: stable across builds, platforms and Rust versions (unlike
//! `std`'s hashers), and enough to tell two shapes apart, which is all it is asked.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

use crate::graph::{Endpoint, Graph};

/// A 64-bit digest, shown and stored as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16)
            .map(Fingerprint)
            .map_err(|e| format!("`{s}` is not a fingerprint: {e}"))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// FNV-1a, fed field by field; each field ends with a separator byte that no UTF-8 text holds.
#[derive(Debug, Clone, Copy)]
struct Digest(u64);

impl Digest {
    fn new() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    fn field(&mut self, text: &str) -> &mut Self {
        self.bytes(text.as_bytes()).bytes(&[0xff])
    }

    fn finish(&self) -> Fingerprint {
        Fingerprint(self.0)
    }
}

/// The fingerprints of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepPrint {
    /// The identity of the step's output type (path and serde shape).
    pub output: Fingerprint,
    /// Where the step sits: node, kind, input type, what feeds it, the map around it.
    pub place: Fingerprint,
}

/// The digest of a type's JSON Schema, for [`crate::Step::with_output_schema`]: object keys in
/// sorted order, `description`, `title`, `examples` and `$comment` left out.
pub fn schema_digest(schema: &Value) -> Fingerprint {
    fn walk(d: &mut Digest, v: &Value) {
        match v {
            Value::Null => {
                d.field("n");
            }
            Value::Bool(b) => {
                d.field(if *b { "t" } else { "f" });
            }
            Value::Number(n) => {
                d.field(&n.to_string());
            }
            Value::String(s) => {
                d.field("s").field(s);
            }
            Value::Array(items) => {
                d.field("[");
                for item in items {
                    walk(d, item);
                }
                d.field("]");
            }
            Value::Object(map) => {
                let mut keys: Vec<&String> = map
                    .keys()
                    .filter(|k| {
                        !matches!(
                            k.as_str(),
                            "description" | "title" | "examples" | "$comment"
                        )
                    })
                    .collect();
                keys.sort();
                d.field("{");
                for k in keys {
                    d.field(k);
                    walk(d, &map[k.as_str()]);
                }
                d.field("}");
            }
        }
    }
    let mut d = Digest::new();
    walk(&mut d, schema);
    d.finish()
}

/// The fingerprints of a graph: the workflow's, and each step's by its path (`charge`, or
/// `payment_flow/charge` inside a sub-workflow).
#[derive(Debug, Clone)]
pub struct Fingerprints {
    /// The workflow's fingerprint.
    pub workflow: Fingerprint,
    steps: HashMap<String, StepPrint>,
    /// The output type of each step, by path, for messages.
    types: HashMap<String, &'static str>,
}

impl Fingerprints {
    /// Computes the fingerprints of `graph` (and of its sub-workflows, under their step names).
    pub fn of(graph: &Graph) -> Self {
        let mut f = Fingerprints {
            workflow: Fingerprint(0),
            steps: HashMap::new(),
            types: HashMap::new(),
        };
        f.workflow = f.add(graph, "");
        f
    }

    fn add(&mut self, graph: &Graph, prefix: &str) -> Fingerprint {
        let ty = crate::graph::short_type;
        let mut whole = Digest::new();
        whole
            .field("workflow")
            .field(graph.finishes().unwrap_or(graph.name))
            .field(&ty(graph.input_type))
            .field(&ty(graph.output_type));
        for (i, step) in graph.steps.iter().enumerate() {
            let mut output = Digest::new();
            output.field(&ty(step.output_type));
            match step.output_shape {
                Some(shape) => output.field(&shape.to_string()),
                None => output.field("-"),
            };
            let mut feeds: Vec<String> = graph
                .edges
                .iter()
                .filter(|(_, to)| *to == Endpoint::Step(i))
                .map(|(from, _)| match from {
                    Endpoint::Input => "(input)".to_owned(),
                    Endpoint::Output => "(output)".to_owned(),
                    Endpoint::Step(j) => graph.steps[*j].name.to_owned(),
                })
                .collect();
            feeds.sort();
            let mut place = Digest::new();
            place
                .field(step.name)
                .field(step.kind.as_str())
                .field(&ty(step.input_type));
            for from in &feeds {
                place.field(from);
            }
            // The map around it, named by its first step and nesting depth.
            let mut depth = 0;
            let mut map = graph.map_of(i);
            if let Some(m) = map {
                let first = graph.maps[m].steps.first().copied().unwrap_or(i);
                place.field("map").field(graph.steps[first].name);
            }
            while let Some(m) = map {
                depth += 1;
                map = graph.maps[..m]
                    .iter()
                    .rposition(|outer| outer.steps.contains(&i));
            }
            place.field(&depth.to_string());
            let path = format!("{prefix}{}", step.name);
            let mut print = StepPrint {
                output: output.finish(),
                place: place.finish(),
            };
            if let Some(sub) = step.subgraph() {
                // A sub-workflow's place covers its inner graph: an inner change moves it.
                let inner = self.add(sub, &format!("{path}/"));
                print.place = Digest::new()
                    .field(&print.place.to_string())
                    .field(&inner.to_string())
                    .finish();
            }
            whole
                .field(&path)
                .field(&print.output.to_string())
                .field(&print.place.to_string());
            self.steps.insert(path.clone(), print);
            self.types.insert(path, step.output_type);
        }
        for (from, to) in &graph.edges {
            whole.field(&format!("{from:?}->{to:?}"));
        }
        for (from, to, label) in &graph.labels {
            whole.field(&format!("{from:?}->{to:?}:{label}"));
        }
        for m in &graph.maps {
            whole.field(&format!(
                "map{:?}/{}/{}",
                m.steps, m.concurrency, m.collect_errors
            ));
        }
        whole.finish()
    }

    /// The fingerprints of the step recorded as `scoped` (`score[3]`, `payment_flow/charge`,
    /// `charge~refund` for a compensation of `charge`): map item indices and the compensation
    /// suffix are not part of a step's identity.
    pub fn step(&self, scoped: &str) -> Option<StepPrint> {
        self.steps.get(&*unscoped(scoped)).copied()
    }

    /// Checks what a run recorded against this graph: every step it completed (with the
    /// fingerprints recorded then, when it has them) must still exist, return the same type and
    /// sit in the same place. The first step that does not is the one reported.
    pub fn check<'a>(
        &self,
        recorded: impl IntoIterator<Item = (&'a str, Option<StepPrint>)>,
    ) -> Result<(), GraphChanged> {
        for (scoped, print) in recorded {
            let path = unscoped(scoped);
            let Some(now) = self.steps.get(&*path) else {
                return Err(GraphChanged {
                    step: scoped.to_owned(),
                    change: Change::Removed,
                    message: format!(
                        "step `{path}` completed in this run, and the workflow no longer has a step `{path}`"
                    ),
                });
            };
            let Some(then) = print else { continue };
            if then.output != now.output {
                let ty = self.types.get(&*path).copied().unwrap_or("?");
                return Err(GraphChanged {
                    step: scoped.to_owned(),
                    change: Change::Type,
                    message: format!(
                        "the output type of step `{path}` changed since this run recorded it (fingerprint {} then, {} now for `{}`): its recorded output would not fit",
                        then.output,
                        now.output,
                        crate::graph::short_type(ty)
                    ),
                });
            }
            if then.place != now.place {
                return Err(GraphChanged {
                    step: scoped.to_owned(),
                    change: Change::Moved,
                    message: format!(
                        "step `{path}` moved since this run recorded it (its node, input or the steps feeding it changed): its recorded output was computed from another input"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A recorded step name without map item indices and compensation suffix: `score[3]` ->
/// `score`, `a[1]/b[2]~undo` -> `a/b`.
pub fn unscoped(scoped: &str) -> std::borrow::Cow<'_, str> {
    let base = scoped.split('~').next().unwrap_or(scoped);
    if !base.contains('[') {
        return std::borrow::Cow::Borrowed(base);
    }
    let mut out = String::with_capacity(base.len());
    let mut depth = 0usize;
    for c in base.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    std::borrow::Cow::Owned(out)
}

/// What changed about a recorded step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The graph has no step of that name any more.
    Removed,
    /// The step's output type (its path or its serde shape) changed.
    Type,
    /// The step's node, input type, or the steps feeding it changed.
    Moved,
}

impl Change {
    /// `removed`, `type` or `moved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Removed => "removed",
            Change::Type => "type",
            Change::Moved => "moved",
        }
    }
}

/// Why a recorded run cannot resume on this graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphChanged {
    /// The recorded step (as recorded: scoped).
    pub step: String,
    /// What changed.
    pub change: Change,
    /// What changed, in words.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_digests_ignore_docs_and_key_order() {
        let a = serde_json::json!({"type":"object","description":"x","properties":{"a":{"type":"integer"},"b":{"type":"string"}}});
        let b = serde_json::json!({"properties":{"b":{"type":"string"},"a":{"type":"integer"}},"type":"object"});
        let c = serde_json::json!({"type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"}}});
        assert_eq!(schema_digest(&a), schema_digest(&b));
        assert_ne!(schema_digest(&a), schema_digest(&c));
    }

    fn step(name: &'static str, input: &'static str, output: &'static str) -> crate::graph::Step {
        crate::graph::Step {
            name,
            node: name,
            input_type: input,
            output_type: output,
            options: crate::node::NodeOptions::DEFAULT,
            kind: crate::graph::StepKind::Node,
            call_json: |_, _| Box::pin(async { Err(crate::node::NodeError::permanent("no")) }),
            output_shape: None,
        }
    }

    /// `a -> b -> c` over `u64`s, with `b`'s output type and what feeds `c` as given.
    fn graph(b_out: &'static str, c_from_input: bool) -> Graph {
        use Endpoint::*;
        let c_from = if c_from_input { Input } else { Step(1) };
        Graph::new::<u64, u64>("g")
            .with_steps(vec![
                step("a", "u64", "u64"),
                step("b", "u64", b_out),
                step("c", b_out, "u64"),
            ])
            .with_edges(vec![
                (Input, Step(0)),
                (Step(0), Step(1)),
                (c_from, Step(2)),
                (Step(2), Output),
            ])
    }

    #[test]
    fn checks_name_the_step_and_what_changed() {
        let before = graph("my::Priced", false);
        let recorded = |names: &[&'static str]| {
            names
                .iter()
                .map(|n| (*n, before.fingerprints().step(n)))
                .collect::<Vec<_>>()
        };
        let same = graph("other::module::Priced", false);
        assert_eq!(
            same.fingerprint(),
            before.fingerprint(),
            "a module move is no change"
        );
        assert_eq!(
            same.fingerprints().check(recorded(&["a", "b", "c"])),
            Ok(())
        );

        let retyped = graph("my::Quote", false);
        assert_ne!(retyped.fingerprint(), before.fingerprint());
        // `a` still fits; `b` returns another type now.
        assert_eq!(retyped.fingerprints().check(recorded(&["a"])), Ok(()));
        let e = retyped
            .fingerprints()
            .check(recorded(&["a", "b"]))
            .unwrap_err();
        assert_eq!((e.step.as_str(), e.change), ("b", Change::Type));
        assert!(e.message.contains("`Quote`"), "{}", e.message);

        let moved = graph("my::Priced", true);
        let e = moved
            .fingerprints()
            .check(recorded(&["a", "b", "c"]))
            .unwrap_err();
        assert_eq!((e.step.as_str(), e.change), ("c", Change::Moved));

        let e = before
            .fingerprints()
            .check([("gone[2]", None)])
            .unwrap_err();
        assert_eq!((e.step.as_str(), e.change), ("gone[2]", Change::Removed));
        // Records without fingerprints (older journals) are checked for existence only.
        assert_eq!(retyped.fingerprints().check([("b", None)]), Ok(()));
    }

    #[test]
    fn scoped_names_lose_items_and_compensations() {
        assert_eq!(unscoped("score[3]"), "score");
        assert_eq!(unscoped("a[1]/b[2][4]~undo"), "a/b");
        assert_eq!(unscoped("plain"), "plain");
        let f: Fingerprint = "00000000000000ff".parse().unwrap();
        assert_eq!(f, Fingerprint(255));
        assert_eq!(f.to_string(), "00000000000000ff");
    }
}
