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
            let mut ctx = RunCtx::new(Self::NAME);
            if let Some(limit) = this.graph().timeout {
                // `#[timeout(..)]` holds in-process too.
                ctx = ctx.with_control(std::sync::Arc::new(crate::wait::RunControl::new(
                    crate::runs::now_ms(),
                    Some(limit),
                )));
            }
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

pub(crate) use crate::json::TOO_DEEP;
pub use crate::json::{parse_json, MAX_JSON_DEPTH};

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

/// A run of `w` on `input`. A function that returns a block rather than an `async fn`, which
/// would keep its arguments (the run's context among them) twice in the run's future (issue 16).
#[allow(clippy::manual_async_fn)] // an `async fn` holds its arguments twice
fn drive<W: Workflow>(
    w: W,
    ctx: RunCtx,
    input: W::Input,
) -> impl Future<Output = Result<Bytes, Error>> + Send + 'static {
    async move {
        let span = ctx.run_span();
        if span.is_disabled() {
            // No subscriber records runs (`serve`'s default log level): the run's future is not
            // wrapped in the span, one move of it less (issue 16).
            return drive_in_span(w, &ctx, input).await;
        }
        let result = drive_in_span(w, &ctx, input).instrument(span.clone()).await;
        crate::observability::trace::record_run(&span, &result);
        result
    }
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
            // A run that waits (a signal, a sleep) has not ended either, and a duplicate was
            // never recorded.
            Err(Error::Journal(_) | Error::Waiting { .. } | Error::Duplicate { .. }) => {}
            Err(error) => ctx.finish_run(Err(RunError::from_error(error).1)).await?,
        }
    }
    result
}
