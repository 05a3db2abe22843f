//! The workflow contract implemented by `workflow!`, and its type-erased JSON form used by the
//! runner, the command line and the triggers.

use std::future::Future;

use axum::body::Bytes;
use tracing::Instrument as _;

use crate::error::Error;
use crate::graph::Graph;
use crate::node::{Data, NodeError};
use crate::run::{RunCtx, Scope};
use crate::runs::RunError;

/// A workflow declared with `workflow!`. Implemented by the macro, never by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a workflow",
    label = "expected a workflow declared in `workflow!`",
    note = "`#[trigger(after = ...)]` and `Runner::workflow` take the name of a workflow, not of a node"
)]
pub trait Workflow: Copy + Send + Sync + 'static {
    /// The first step's input (the trigger's payload).
    type Input: Data;
    /// The last step's output.
    type Output: Data;
    /// The workflow's name.
    const NAME: &'static str;

    /// The graph as declared: steps, edges, triggers, types.
    fn graph(&self) -> &'static Graph;

    /// Runs the graph within `ctx`. Values pass between in-process nodes without serialization
    /// and independent branches run concurrently.
    fn execute<'a>(
        &'a self,
        ctx: &'a RunCtx,
        input: Self::Input,
    ) -> impl Future<Output = Result<Self::Output, Error>> + Send + 'a;

    /// JSON Schemas of the input and output (`None` for a type without `schemars::JsonSchema`).
    fn schemas(&self) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
        (None, None)
    }

    /// Runs the workflow in-process on `input` and returns its output.
    fn run(&self, input: Self::Input) -> impl Future<Output = Result<Self::Output, Error>> + Send {
        let this = *self;
        async move {
            let ctx = RunCtx::new(Self::NAME);
            let span = ctx.run_span();
            let result = this.execute(&ctx, input).instrument(span.clone()).await;
            crate::observability::trace::record_run(&span, &result);
            result
        }
    }
}

impl RunCtx {
    /// Runs `workflow` as step `name` of this run: a sub-workflow. Its steps are journaled
    /// as part of this run, named `name/step`, so a resumed run skips those that completed; a
    /// failure names this run's workflow and the scoped step.
    #[doc(hidden)]
    pub async fn sub_workflow<W: Workflow>(
        &self,
        workflow: W,
        name: &'static str,
        input: W::Input,
    ) -> Result<W::Output, Error> {
        let child = self.child(Scope::sub(&self.name(name)));
        let result = workflow.execute(&child, input).await;
        // What the sub-workflow completed is undone with the rest of this run if it fails later.
        self.adopt(&child);
        result
    }
}

/// A workflow called as a plain node (`Node::call`, outside any run): a run of its own.
#[doc(hidden)]
pub async fn run_as_node<W: Workflow>(
    workflow: W,
    input: W::Input,
) -> Result<W::Output, NodeError> {
    workflow.run(input).await.map_err(|error| match error {
        Error::Node { error, .. } => error,
        other => NodeError::permanent(other.to_string()),
    })
}

pub use crate::error::{InputError, InputErrorKind};

/// How deeply arrays and objects may nest in an input: serde_json's own limit, so that every
/// accepted input can also be read back and served (`GET /runs`) as JSON.
pub const MAX_JSON_DEPTH: usize = 128;

/// The start of the message of an input refused for nesting deeper than [`MAX_JSON_DEPTH`].
pub(crate) const TOO_DEEP: &str = "arrays and objects nest deeper than";

/// Where `bytes` first nests deeper than `limit` (the byte offset), skipping strings. Invalid
/// JSON is left to the parser.
fn too_deep(bytes: &[u8], limit: usize) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Parses a JSON document into `T`, reporting the path of a value that does not fit.
///
/// Input nesting deeper than [`MAX_JSON_DEPTH`] is refused even where the type would ignore
/// it (an unknown field): it could be stored but never read back as JSON.
pub fn parse_json<T: Data>(bytes: &[u8]) -> Result<T, InputError> {
    if let Some(at) = too_deep(bytes, MAX_JSON_DEPTH) {
        let line = 1 + bytes[..at].iter().filter(|b| **b == b'\n').count();
        let column = at
            - bytes[..at]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |p| p + 1)
            + 1;
        return Err(InputError {
            kind: InputErrorKind::Syntax,
            message: format!("{TOO_DEEP} {MAX_JSON_DEPTH} levels"),
            path: ".".into(),
            line,
            column,
        });
    }
    // Fast path without path tracking; a failure is parsed again to say where it failed.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut track = serde_path_to_error::Track::new();
    let result = T::deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track))
        .and_then(|value| de.end().map(|()| value));
    result.map_err(|e| {
        use serde_json::error::Category;
        let kind = match e.classify() {
            Category::Data => InputErrorKind::Data,
            Category::Syntax | Category::Eof | Category::Io => InputErrorKind::Syntax,
        };
        let path = track.path().to_string();
        let message = strip_position(&e.to_string());
        InputError {
            kind,
            message,
            path,
            line: e.line(),
            column: e.column(),
        }
    })
}

/// serde_json appends " at line L column C"; the position is reported separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

pub use crate::graph::BoxFuture;

/// A run started from JSON: resolves to the output serialized as JSON.
pub type JsonRun = BoxFuture<'static, Result<Bytes, Error>>;

/// A workflow with its types erased to JSON: what the runner stores.
pub trait DynWorkflow: Send + Sync + 'static {
    /// The workflow's graph.
    fn graph(&self) -> &'static Graph;
    /// Parses `input` (refusing it before any run exists) and returns the run to drive.
    fn start(&self, ctx: RunCtx, input: &[u8]) -> Result<JsonRun, InputError>;
    /// The JSON Schemas of the input and output types, when they implement `JsonSchema`.
    fn schemas(&self) -> (Option<serde_json::Value>, Option<serde_json::Value>);
}

impl<W: Workflow> DynWorkflow for W {
    fn graph(&self) -> &'static Graph {
        Workflow::graph(self)
    }

    fn start(&self, ctx: RunCtx, input: &[u8]) -> Result<JsonRun, InputError> {
        let input: W::Input = parse_json(input)?;
        Ok(Box::pin(drive(*self, ctx, input)))
    }

    fn schemas(&self) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
        Workflow::schemas(self)
    }
}

async fn drive<W: Workflow>(w: W, ctx: RunCtx, input: W::Input) -> Result<Bytes, Error> {
    let span = ctx.run_span();
    let result = drive_in_span(w, &ctx, input).instrument(span.clone()).await;
    crate::observability::trace::record_run(&span, &result);
    result
}

async fn drive_in_span<W: Workflow>(w: W, ctx: &RunCtx, input: W::Input) -> Result<Bytes, Error> {
    let result = w.execute(ctx, input).await.and_then(|output| {
        serde_json::to_vec(&output).map(Bytes::from).map_err(|e| {
            Error::Config(format!(
                "the output of workflow `{}` does not serialize to JSON: {e}",
                W::NAME
            ))
        })
    });
    if ctx.is_durable() {
        match &result {
            Ok(bytes) => ctx.finish_run(Ok(bytes.clone())).await?,
            // The journal itself failed: the run stays `running` and resumes after a restart.
            // A run that waits (a signal, a sleep) has not ended either.
            Err(Error::Journal(_) | Error::Waiting { .. }) => {}
            Err(error) => ctx.finish_run(Err(RunError::from_error(error).1)).await?,
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_counted_outside_strings() {
        assert_eq!(too_deep(b"[[1]]", 2), None);
        assert_eq!(too_deep(b"[[[1]]]", 2), Some(2));
        assert_eq!(too_deep(br#"{"a":"[[[[\"[["}"#, 1), None);
        assert_eq!(too_deep(br#"{"a":{"b":[]}}"#, 2), Some(10));
    }

    #[test]
    fn too_deep_input_is_refused_even_when_ignored() {
        #[derive(Debug, serde::Deserialize, serde::Serialize)]
        struct Small {
            id: u32,
        }
        let deep = format!(
            r#"{{"id":1,"junk":{}1{}}}"#,
            "[".repeat(130),
            "]".repeat(130)
        );
        let e = parse_json::<Small>(deep.as_bytes()).unwrap_err();
        assert_eq!(e.kind, InputErrorKind::Syntax);
        assert!(e.message.starts_with(TOO_DEEP), "{e}");
        assert_eq!((e.line, e.column), (1, 15 + MAX_JSON_DEPTH));
        let fine = format!(
            r#"{{"id":1,"junk":{}1{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(parse_json::<Small>(fine.as_bytes()).unwrap().id, 1);
    }
}
