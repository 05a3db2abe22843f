//! One run of a workflow: its id, its context, and how each step is executed
//! (retries with backoff and jitter, timeouts, panics caught).

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::future::Either;
use futures_util::FutureExt as _;
use tracing::Instrument as _;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;

use crate::error::Error;
use crate::graph::Graph;
pub(crate) use crate::id::random_u64;
pub use crate::id::RunId;
use crate::journal::{Created, FinishWrite, Journal, NewRun, StepWrite, StoreError};
use crate::node::{Accepts, Node, NodeError, NodeOptions};
use crate::observability::{trace, RunObserver, TraceParent};
use crate::runs::RunError;
use tokio::sync::oneshot;

/// The delay before retry number `retry` (1 for the first retry): exponential from
/// `options.backoff`, capped at `options.max_backoff`, with "equal jitter" (a uniformly random
/// value in the upper half), so synchronized failures spread out while the delay stays bounded.
pub fn backoff_delay(options: &NodeOptions, retry: u32) -> Duration {
    let factor = 1u32
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let full = options
        .backoff
        .saturating_mul(factor)
        .min(options.max_backoff);
    let half = full / 2;
    let nanos = half.as_nanos() as u64;
    let jitter = if nanos == 0 {
        0
    } else {
        random_u64() % (nanos + 1)
    };
    half + Duration::from_nanos(jitter)
}

/// Where in its run a context runs steps: inside which sub-workflow steps and map items.
#[derive(Debug)]
pub(crate) struct Scope {
    /// The enclosing sub-workflow steps and outer map items; `None` at the top of a run.
    path: Option<Arc<ScopePath>>,
    /// The index of the innermost enclosing map item, or [`Scope::NO_ITEM`]. Atomic because
    /// a map reuses one context for the items that run one after the other in one of its
    /// places (see `map.rs`).
    item: AtomicUsize,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            path: None,
            item: AtomicUsize::new(Scope::NO_ITEM),
        }
    }
}

impl Clone for Scope {
    fn clone(&self) -> Self {
        Scope {
            path: self.path.clone(),
            item: AtomicUsize::new(self.item.load(Ordering::Relaxed)),
        }
    }
}

#[derive(Debug, Default)]
struct ScopePath {
    /// The enclosing sub-workflow steps, scoped themselves, each followed by `/`.
    prefix: String,
    /// The indices of the enclosing map items but the innermost, formatted `[3][5]`.
    outer: String,
}

impl Scope {
    /// The scope inside the sub-workflow run as step `step`.
    pub(crate) fn sub(step: &StepName<'_>) -> Scope {
        Scope {
            path: Some(Arc::new(ScopePath {
                prefix: format!("{step}/"),
                outer: String::new(),
            })),
            item: AtomicUsize::new(Scope::NO_ITEM),
        }
    }

    const NO_ITEM: usize = usize::MAX;

    /// The scope the items of a map start from: this one, with the innermost item index
    /// folded into the outer ones (done once per map, not per item).
    pub(crate) fn items_base(&self) -> Scope {
        let Some(index) = self.item_index() else {
            return self.clone();
        };
        let (prefix, outer) = match &self.path {
            Some(path) => (path.prefix.clone(), path.outer.as_str()),
            None => (String::new(), ""),
        };
        Scope {
            path: Some(Arc::new(ScopePath {
                prefix,
                outer: format!("{outer}[{index}]"),
            })),
            item: AtomicUsize::new(Scope::NO_ITEM),
        }
    }

    /// Makes this the scope of item `index` of a map whose [`Scope::items_base`] this was.
    pub(crate) fn set_item(&self, index: usize) {
        self.item.store(index, Ordering::Relaxed);
    }

    /// The index of the innermost map item.
    pub(crate) fn item_index(&self) -> Option<usize> {
        Some(self.item.load(Ordering::Relaxed)).filter(|i| *i != Scope::NO_ITEM)
    }

    fn is_top(&self) -> bool {
        self.path.is_none() && self.item_index().is_none()
    }
}

/// A step's name in the journal and in errors: its name in the graph, scoped by the
/// sub-workflows and map items around it (`payment_flow/charge`, `score[17]`).
///
/// Kept in parts and formatted only when needed (a journaled run, an error, a log line), so
/// that the items of an unjournaled map cost no allocation for their names.
#[derive(Clone, Copy)]
pub(crate) struct StepName<'a> {
    scope: &'a Scope,
    /// The name written in the graph; for a compensation, its record `step~undo_node`.
    step: &'static str,
}

impl StepName<'_> {
    /// The name as text; borrowed (no allocation) for a step at the top of its run.
    pub(crate) fn text(&self) -> Cow<'static, str> {
        if self.scope.is_top() {
            return Cow::Borrowed(self.step);
        }
        // A compensation's record takes the scope after the step it undoes, `score[3]~undo`,
        // which is what a resumed run reads.
        let (head, tail) = self
            .step
            .split_at(self.step.find('~').unwrap_or(self.step.len()));
        let (prefix, outer) = match &self.scope.path {
            Some(path) => (path.prefix.as_str(), path.outer.as_str()),
            None => ("", ""),
        };
        let mut name = String::with_capacity(prefix.len() + self.step.len() + outer.len() + 8);
        name.push_str(prefix);
        name.push_str(head);
        name.push_str(outer);
        if let Some(i) = self.scope.item_index() {
            use std::fmt::Write as _;
            let _ = write!(name, "[{i}]");
        }
        name.push_str(tail);
        Cow::Owned(name)
    }
}

impl fmt::Display for StepName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// What a runner gives a run it executes ([`RunCtx::for_runner`]).
pub(crate) struct RunnerParts {
    /// The run's journal, when it is durable.
    pub(crate) durable: Option<Durable>,
    pub(crate) containers: Option<Isolated>,
    pub(crate) state: Arc<crate::state::KeyedState>,
    pub(crate) observer: RunObserver,
    pub(crate) control: Arc<crate::wait::RunControl>,
    pub(crate) trace_parent: Option<TraceParent>,
}

/// The context of one run, passed to every step. Created by [`Workflow::run`](crate::Workflow::run)
/// or by the runner.
pub struct RunCtx {
    run_id: RunId,
    workflow: &'static str,
    durable: Option<Arc<Durable>>,
    /// The runner's container pools, for nodes isolated in containers.
    containers: Option<Isolated>,
    /// Keyed state and per-key locks of stateful nodes (the runner's, or the process's).
    state: Arc<crate::state::KeyedState>,
    /// Compensations of completed steps, in completion order (saga).
    compensations: Mutex<Vec<Compensation>>,
    /// Metrics and live events of the runner, when run by one.
    observer: Option<RunObserver>,
    /// The trigger's W3C trace context, the parent of the run's span.
    trace_parent: Option<TraceParent>,
    /// Inside which sub-workflows and map items this context runs steps.
    scope: Scope,
    /// Its cancellation and its workflow's deadline, when run by a runner or under a
    /// `#[timeout(..)]`.
    pub(crate) control: Option<Arc<crate::wait::RunControl>>,
}

impl std::fmt::Debug for RunCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunCtx")
            .field("run_id", &self.run_id)
            .field("workflow", &self.workflow)
            .field("durable", &self.durable.is_some())
            .finish()
    }
}

/// Where nodes run when not in this process: the container pools implement it (`isolation`),
/// and the engine only sees this contract.
pub(crate) trait NodeHost: Send + Sync + std::fmt::Debug {
    /// Whether node `node` with `options` runs here rather than in-process.
    fn serves(&self, node: &str, options: &NodeOptions) -> bool;
    /// Calls `node` once on JSON `input` (and its state, for a stateful node).
    fn call<'a>(
        &'a self,
        node: &'a str,
        input: Bytes,
        state: Option<Bytes>,
    ) -> crate::graph::BoxFuture<'a, Result<(Bytes, Option<Bytes>), NodeError>>;
    /// Live instances and cold starts per node (for metrics).
    fn stats(&self) -> Vec<(&'static str, usize, usize)>;
    /// `Err(why)` while the host cannot run nodes (its engine is unreachable), for `/readyz`.
    fn ready(&self) -> Result<(), String>;
    /// Stops every instance.
    fn shutdown(&self) -> crate::graph::BoxFuture<'_, ()>;
}

/// The runner's node host, shared by every run.
pub(crate) type Isolated = Arc<dyn NodeHost>;

/// One attempt of node `N`: in one of its containers when `via` is set, else in-process. The
/// state is `N::State::default()` for a stateless node.
async fn invoke<N: Node>(
    via: Option<Isolated>,
    input: N::Input,
    state: N::State,
) -> Result<(N::Output, N::State), NodeError> {
    if let Some(containers) = via {
        let bad = |what: &str, e: serde_json::Error| {
            NodeError::permanent(format!(
                "the {what} of node `{}` does not cross the container boundary as JSON: {e}",
                N::NAME
            ))
        };
        let input = serde_json::to_vec(&input).map_err(|e| bad("input", e))?;
        let sent_state = if N::STATEFUL {
            Some(Bytes::from(
                serde_json::to_vec(&state).map_err(|e| bad("state", e))?,
            ))
        } else {
            None
        };
        let (output, next) = containers
            .call(N::NAME, Bytes::from(input), sent_state)
            .await?;
        let output: N::Output = serde_json::from_slice(&output).map_err(|e| bad("output", e))?;
        let state = match next {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| bad("state", e))?,
            None => state,
        };
        return Ok((output, state));
    }
    if N::STATEFUL {
        let (result, state) = N::call_with_state(input, state).await;
        result.map(|o| (o, state))
    } else {
        N::call(input).await.map(|o| (o, state))
    }
}

/// A completed step's compensation, ready to run.
struct Compensation {
    /// Where the step ran (the compensation is recorded there too).
    scope: Scope,
    step: &'static str,
    /// The compensation's record name, `step~undo_node`.
    compensation: &'static str,
    defaults: &'static NodeOptions,
    /// The step's output, the compensation's input.
    saved: Bytes,
    run: CompensationFn,
}

type CompensationFn = for<'a> fn(
    &'a RunCtx,
    &'static NodeOptions,
    &'static str,
    &'static str,
    Bytes,
) -> crate::workflow::BoxFuture<'a, Result<(), Error>>;

fn run_compensation<'a, N, C>(
    ctx: &'a RunCtx,
    defaults: &'static NodeOptions,
    step: &'static str,
    compensation: &'static str,
    saved: Bytes,
) -> crate::workflow::BoxFuture<'a, Result<(), Error>>
where
    N: Node,
    C: Node,
{
    // `workflow!` checked that `C` takes `N`'s output; the saved JSON is that output.
    let _ = std::marker::PhantomData::<N>;
    Box::pin(async move {
        let value: C::Input = ctx.decode(&ctx.name(step), &saved)?;
        C::run_step(ctx, defaults, compensation, value)
            .await
            .map(|_| ())
    })
}

/// What a journaled run carries: where to record, and what a resumed run already completed.
#[derive(Debug)]
pub(crate) struct Durable {
    pub(crate) journal: Journal,
    pub(crate) graph: &'static Graph,
    /// Outputs of steps completed before a crash or a re-drive, by step name.
    pub(crate) resumed: HashMap<String, Bytes>,
    /// The run row, written with the run's first record (runs acknowledged only on completion
    /// need no commit of their own before they start, nor a queue message's run).
    pub(crate) pending_create: Mutex<PendingCreate>,
    /// Records sent with the run's next record, in the same transaction: those of completed
    /// `#[node(pure)]` steps (which need no commit of their own: lost in a crash, they are
    /// computed again) and of last steps (written with the run's end).
    pub(crate) deferred: Mutex<Vec<StepWrite>>,
    /// The workflows chained `after` this one: recorded with this run's success.
    pub(crate) downstream: Vec<&'static Graph>,
    /// The waits the run recorded (signals, sleeps), by step name: when each is due to end
    /// by itself (`None`: a signal without a timeout).
    pub(crate) waits: HashMap<String, Option<u64>>,
}

/// A run's row while it waits to be written with the run's first record.
#[derive(Debug, Default)]
pub(crate) struct PendingCreate {
    run: Option<NewRun>,
    /// For a keyed row (a claim): told, by the first awaited record that carried the row,
    /// whether the key was this run's (`Created::New`, the row is durable) or another run's
    /// (nothing of this run was written). Dropped unanswered when that record failed.
    claim: Option<oneshot::Sender<Created>>,
}

impl PendingCreate {
    /// `run` to be written with the first record; `claim` learns how a keyed one fared.
    pub(crate) fn new(run: Option<NewRun>, claim: Option<oneshot::Sender<Created>>) -> Self {
        Self { run, claim }
    }

    /// The row to send with a record, and for an awaited record the claim to answer. A keyed
    /// row goes with every record until one is known durable (the store applies each only if
    /// the key is this run's, and the row once): records sent meanwhile (concurrent steps, a
    /// failed attempt) are never applied for a duplicate.
    pub(crate) fn for_record(&mut self, awaited: bool) -> Sending {
        match &self.run {
            Some(run) if run.idempotency_key.is_some() => Sending {
                create: Some(run.clone()),
                claim: Some(if awaited { self.claim.take() } else { None }),
            },
            _ => Sending {
                create: self.run.take(),
                claim: None,
            },
        }
    }
}

/// What goes with one record of a run not yet recorded: its row, and for a keyed row
/// (`claim` is `Some`) the claim's answer to give once the record settles.
#[derive(Debug)]
pub(crate) struct Sending {
    pub(crate) create: Option<NewRun>,
    claim: Option<Option<oneshot::Sender<Created>>>,
}

impl Sending {
    /// The record's commit, to wait for with [`Recorded::wait`].
    pub(crate) fn sent(self, commit: crate::store::Commit) -> Recorded {
        Recorded {
            commit,
            claim: self.claim,
        }
    }
}

/// A record on its way to the journal.
#[derive(Debug)]
pub(crate) struct Recorded {
    commit: crate::store::Commit,
    claim: Option<Option<oneshot::Sender<Created>>>,
}

impl Recorded {
    /// Waits until the record is durable. One that carried the run's keyed row settles the
    /// claim: the row is written with it (the key was this run's), or nothing of the run was
    /// and the run stops with [`Error::Duplicate`].
    pub(crate) async fn wait(self, ctx: &RunCtx, d: &Durable) -> Result<(), Error> {
        let result = self.commit.await;
        let Some(answer) = self.claim else {
            return result.map_err(journal_failed);
        };
        match result {
            Ok(()) => {
                d.pending_create
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .run = None;
                if let Some(tx) = answer {
                    let _ = tx.send(Created::New);
                }
                Ok(())
            }
            Err(StoreError::KeyTaken(original)) => {
                if let Some(tx) = answer {
                    let _ = tx.send(Created::Existing(original));
                }
                Err(Error::Duplicate {
                    workflow: ctx.workflow,
                    run_id: ctx.run_id,
                    original,
                })
            }
            Err(e) => Err(journal_failed(e)),
        }
    }
}

fn journal_failed(e: StoreError) -> Error {
    Error::Journal(format!("journal write failed: {e}"))
}

/// The outcome of a step's attempts: the value, the attempt that produced it, and when that
/// attempt started (when journaled).
type Attempted<T> = (T, u32, Option<(u64, Instant)>);

impl RunCtx {
    fn from_parts(run_id: RunId, workflow: &'static str, durable: Option<Arc<Durable>>) -> Self {
        Self {
            run_id,
            workflow,
            durable,
            containers: None,
            state: crate::state::KeyedState::process(),
            compensations: Mutex::new(Vec::new()),
            observer: None,
            trace_parent: None,
            scope: Scope::default(),
            control: None,
        }
    }

    /// A context for part of this run (a sub-workflow, a map item): same run and journal,
    /// steps named within `scope`, compensations of its own until [`RunCtx::adopt`].
    pub(crate) fn child(&self, scope: Scope) -> Self {
        Self {
            run_id: self.run_id,
            workflow: self.workflow,
            durable: self.durable.clone(),
            containers: self.containers.clone(),
            state: self.state.clone(),
            compensations: Mutex::new(Vec::new()),
            observer: self.observer.clone(),
            trace_parent: self.trace_parent,
            scope,
            control: self.control.clone(),
        }
    }

    /// A context for part of this run that neither a cancellation nor the deadline stops: what
    /// compensations run in.
    fn child_unstoppable(&self, scope: Scope) -> Self {
        Self {
            control: None,
            ..self.child(scope)
        }
    }

    /// Stopped by `control` (a cancellation, the workflow's deadline).
    pub(crate) fn with_control(mut self, control: Arc<crate::wait::RunControl>) -> Self {
        self.control = Some(control);
        self
    }

    /// The durable part of the run, when journaled.
    pub(crate) fn durable_part(&self) -> Option<&Durable> {
        self.durable.as_deref()
    }

    /// Takes over the compensations a finished child context registered and did not run, so
    /// that they run if this run fails later.
    pub(crate) fn adopt(&self, child: &RunCtx) {
        let theirs = std::mem::take(
            &mut *child
                .compensations
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if !theirs.is_empty() {
            self.compensations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(theirs);
        }
    }

    /// Inside which sub-workflows and map items this context runs.
    pub(crate) fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The name of step `step` (as written in the graph) in this context.
    pub(crate) fn name(&self, step: &'static str) -> StepName<'_> {
        StepName {
            scope: &self.scope,
            step,
        }
    }

    /// Reports this run's node attempts to the runner's metrics and event stream.
    pub(crate) fn observed(mut self, observer: RunObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The span of this run (see [`crate::observability`]).
    pub(crate) fn run_span(&self) -> tracing::Span {
        trace::run_span(self.run_id, self.workflow, self.trace_parent.as_ref())
    }

    /// A context for a new run of `workflow`.
    pub fn new(workflow: &'static str) -> Self {
        Self::from_parts(RunId::new(), workflow, None)
    }

    /// A context for a run with a known id.
    pub fn with_id(workflow: &'static str, run_id: RunId) -> Self {
        Self::from_parts(run_id, workflow, None)
    }

    /// A run executed by a runner, built at once from what the runner gives it (rather than
    /// from a plain context's defaults, replaced one by one: each replacement moved the whole
    /// context, and the process's keyed state was taken only to be dropped).
    pub(crate) fn for_runner(workflow: &'static str, run_id: RunId, parts: RunnerParts) -> Self {
        Self {
            run_id,
            workflow,
            durable: parts.durable.map(Arc::new),
            containers: parts.containers,
            state: parts.state,
            compensations: Mutex::new(Vec::new()),
            observer: Some(parts.observer),
            trace_parent: parts.trace_parent,
            scope: Scope::default(),
            control: Some(parts.control),
        }
    }

    /// A journaled run.
    pub(crate) fn durable(workflow: &'static str, run_id: RunId, durable: Durable) -> Self {
        Self::from_parts(run_id, workflow, Some(Arc::new(durable)))
    }

    /// Dispatches container-isolated nodes to `containers`.
    pub(crate) fn with_containers(mut self, containers: Option<Isolated>) -> Self {
        self.containers = containers;
        self
    }

    /// Keeps keyed state and its locks in `state` (the runner's) instead of the process's.
    pub(crate) fn with_state(mut self, state: Arc<crate::state::KeyedState>) -> Self {
        self.state = state;
        self
    }

    /// The pools that run node `node` with `options`, when it runs in a container.
    fn isolated(&self, node: &str, options: &NodeOptions) -> Option<Isolated> {
        self.containers
            .as_ref()
            .filter(|c| c.serves(node, options))
            .cloned()
    }

    /// This run's id.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// The workflow being run.
    pub fn workflow(&self) -> &'static str {
        self.workflow
    }

    /// Runs step `name` (node `N`) on `input`, applying the node's retry and timeout policy.
    ///
    /// Generated by `workflow!` for every node occurrence; the `Accepts` bound is the
    /// compile-time check that the edge into this step carries the right type.
    #[doc(hidden)]
    #[inline]
    pub async fn step<N, T>(&self, name: &'static str, input: T) -> Result<N::Output, Error>
    where
        N: Accepts<T, <N as Node>::Input>,
    {
        self.step_in::<N, T>(&NodeOptions::DEFAULT, name, input)
            .await
    }

    /// [`RunCtx::step`] with the workflow's `#[defaults(...)]` under the node's own options.
    #[doc(hidden)]
    #[inline]
    pub fn step_in<N, T>(
        &self,
        defaults: &'static NodeOptions,
        name: &'static str,
        input: T,
    ) -> impl Future<Output = Result<N::Output, Error>> + Send + '_
    where
        N: Accepts<T, <N as Node>::Input>,
    {
        // Not an `async fn`: the node's future is returned as it is, one layer less per step.
        N::run_step(self, defaults, name, N::into_input(input))
    }

    /// A step whose input type is already the node's.
    ///
    /// The common case is kept small, for a map holds one of these per item in flight: no
    /// journal, no state, one attempt without a time limit is the node's own future and a
    /// closure. The rest is boxed, so that its larger state does not weigh on that.
    #[inline]
    pub(crate) fn step_named<'a, N: Node>(
        &'a self,
        defaults: &'static NodeOptions,
        name: &'static str,
        input: N::Input,
    ) -> impl Future<Output = Result<N::Output, Error>> + Send + 'a {
        let options = N::OPTIONS.or(defaults);
        if self.durable.is_none()
            && self.containers.is_none()
            && self.observer.is_none()
            && self.control.is_none()
            && !trace::node_spans_enabled()
            && !N::STATEFUL
            && options.retries == 0
            && options.timeout.is_none()
        {
            Either::Left(
                AssertUnwindSafe(N::call(input))
                    .catch_unwind()
                    .map(move |outcome| match outcome {
                        Ok(Ok(output)) => Ok(output),
                        Ok(Err(error)) => Err(self.node_failed(&self.name(name), 1, error)),
                        Err(payload) => Err(self.node_failed(
                            &self.name(name),
                            1,
                            NodeError::panic(panic_message(payload.as_ref())),
                        )),
                    }),
            )
        } else if self.durable.is_none()
            && self.containers.is_none()
            && !trace::node_spans_enabled()
            && !N::STATEFUL
            && options.retries == 0
            && options.timeout.is_none()
        {
            // A runner's step without the journal: only the run's stop and its metrics on top
            // of the node, unboxed (a box per step was a third of a run's allocations).
            Either::Right(Either::Left(self.step_observed::<N>(name, input)))
        } else {
            Either::Right(Either::Right(Box::pin(
                self.step_policies::<N>(options, name, input),
            )))
        }
    }

    /// One attempt of an in-process stateless step, raced against the run's stop and reported
    /// to its metrics: what [`RunCtx::step_policies`] does for such a step, without its other
    /// cases' state.
    async fn step_observed<N: Node>(
        &self,
        name: &'static str,
        input: N::Input,
    ) -> Result<N::Output, Error> {
        if let Some(control) = &self.control {
            control.check(self)?;
        }
        let clock = self.observer.as_ref().map(|_| Instant::now());
        let call = std::pin::pin!(AssertUnwindSafe(N::call(input)).catch_unwind());
        let outcome = match &self.control {
            None => call.await,
            Some(control) => control.interrupt_pinned(self, call).await?,
        }
        .unwrap_or_else(|payload| Err(NodeError::panic(panic_message(payload.as_ref()))));
        if let (Some(observer), Some(clock)) = (&self.observer, clock) {
            let error = outcome.as_ref().err();
            observer.attempt(
                self.run_id,
                self.workflow,
                name,
                1,
                clock.elapsed(),
                error,
                false,
            );
        }
        outcome.map_err(|error| self.node_failed(&self.name(name), 1, error))
    }

    /// A step with the journal, state, retries or a timeout.
    async fn step_policies<N: Node>(
        &self,
        options: NodeOptions,
        name: &'static str,
        input: N::Input,
    ) -> Result<N::Output, Error> {
        let name = &self.name(name);
        if let Some(durable) = &self.durable {
            if let Some(recorded) = durable.resumed.get(&*name.text()) {
                // Completed before a restart: never run again. A value that no longer fits
                // (a journal without fingerprints, a shape they could not see) parks the run
                // rather than failing the node (issue 13).
                return serde_json::from_slice(recorded).map_err(|e| Error::GraphChanged {
                    workflow: self.workflow,
                    step: name.text(),
                    run_id: self.run_id,
                    message: format!(
                        "the recorded output of step `{name}` no longer fits its type `{}`: {e}",
                        crate::graph::short_type(std::any::type_name::<N::Output>())
                    ),
                });
            }
        }
        if let Some(control) = &self.control {
            control.check(self)?;
        }
        if N::STATEFUL {
            // Boxed: its larger state must not weigh on every stateless step's future.
            return Box::pin(self.stateful::<N>(name, input, &options)).await;
        }
        let via = self.isolated(N::NAME, &options);
        let ((output, _), attempt, started) = self
            .attempts::<N, _, _, _>(name, input, &options, |i| {
                invoke::<N>(via.clone(), i, N::State::default())
            })
            .await?;
        let (Some(d), Some(started)) = (self.durable.as_deref(), started) else {
            return Ok(output);
        };
        let bytes = self.encode(name, attempt, &output)?;
        // A pure step needs no commit of its own, and a last step's record is written with
        // the run's end (a scoped name is never terminal: a map item frees its slot for the
        // next item, and a sub-workflow's last step is followed by the parent's).
        if N::PURE || d.graph.is_terminal(&name.text()) {
            let write = self.step_write(name, attempt, Ok(bytes), started, None);
            d.deferred
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(write);
            return Ok(output);
        }
        // A step whose successors would start now must be durable first, so that a crash can
        // never make it run twice.
        let recorded = self.record(d, name, attempt, Ok(bytes), started, None);
        recorded.wait(self, d).await?;
        Ok(output)
    }

    /// [`RunCtx::step_in`] for a step with a compensation (`#[compensate(step => comp)]`): once
    /// the step completes, `C` is registered to run on its output if the run fails later.
    #[doc(hidden)]
    pub async fn step_compensated<N, T, C>(
        &self,
        defaults: &'static NodeOptions,
        name: &'static str,
        compensation: &'static str,
        input: T,
    ) -> Result<N::Output, Error>
    where
        N: Accepts<T, <N as Node>::Input>,
        C: Node,
    {
        let output = self.step_in::<N, T>(defaults, name, input).await?;
        let saved = self.encode(&self.name(name), 0, &output)?;
        let entry = Compensation {
            scope: self.scope.clone(),
            step: name,
            compensation,
            defaults,
            saved,
            run: run_compensation::<N, C>,
        };
        self.compensations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
        Ok(output)
    }

    /// Runs the registered compensations, latest completed step first. A compensation that
    /// fails is logged and recorded; the others still run.
    pub(crate) async fn compensate(&self, cause: &Error) {
        let list =
            std::mem::take(&mut *self.compensations.lock().unwrap_or_else(|p| p.into_inner()));
        for c in list.into_iter().rev() {
            // Run where the step ran, so that the compensation is recorded beside it.
            let ctx = self.child_unstoppable(c.scope);
            let step = ctx.name(c.step);
            tracing::info!(run_id = %self.run_id, workflow = self.workflow, step = %step, cause = %cause, "compensating");
            if let Err(e) = (c.run)(&ctx, c.defaults, c.step, c.compensation, c.saved).await {
                tracing::error!(run_id = %self.run_id, workflow = self.workflow, step = %step, error = %e, "compensation failed");
            }
        }
    }

    fn encode<T: serde::Serialize>(
        &self,
        name: &StepName<'_>,
        attempt: u32,
        value: &T,
    ) -> Result<Bytes, Error> {
        serde_json::to_vec(value).map(Bytes::from).map_err(|e| {
            self.node_failed(
                name,
                attempt,
                NodeError::permanent(format!("the output does not serialize to JSON: {e}")),
            )
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        name: &StepName<'_>,
        bytes: &[u8],
    ) -> Result<T, Error> {
        serde_json::from_slice(bytes).map_err(|e| {
            self.node_failed(
                name,
                0,
                NodeError::permanent(format!(
                    "the journaled value no longer fits the node's type: {e}"
                )),
            )
        })
    }

    /// Tries `call` up to `1 + retries` times with backoff, recording failed attempts.
    async fn attempts<N, T, F, M>(
        &self,
        name: &StepName<'_>,
        input: N::Input,
        options: &NodeOptions,
        mut call: M,
    ) -> Result<Attempted<T>, Error>
    where
        N: Node,
        M: FnMut(N::Input) -> F,
        F: Future<Output = Result<T, NodeError>>,
    {
        let durable = self.durable.as_deref();
        let mut attempt = 1;
        let mut input = Some(input);
        loop {
            let last = attempt > options.retries;
            let arg = match (last, input.take()) {
                (true, Some(i)) => i,
                (false, Some(i)) => {
                    let copy =
                        N::duplicate(&i).map_err(|error| self.node_failed(name, attempt, error))?;
                    input = Some(i);
                    copy
                }
                (_, None) => unreachable!("the input is kept until the last attempt"),
            };
            let started = durable.map(|_| (crate::runs::now_ms(), Instant::now()));
            let clock = self.observer.as_ref().map(|_| Instant::now());
            let span = trace::attempt_span(self.run_id, self.workflow, name.step, attempt);
            let attempt_call = std::pin::pin!(guarded(call(arg), options).instrument(span.clone()));
            let outcome = match &self.control {
                None => attempt_call.await,
                Some(control) => control.interrupt_pinned(self, attempt_call).await?,
            };
            let error = outcome.as_ref().err();
            let will_retry = error.is_some_and(|e| !last && e.is_retryable());
            trace::record_attempt(&span, error, will_retry);
            if let (Some(observer), Some(clock)) = (&self.observer, clock) {
                let took = clock.elapsed();
                observer.attempt(
                    self.run_id,
                    self.workflow,
                    name.step,
                    attempt,
                    took,
                    error,
                    will_retry,
                );
            }
            match outcome {
                Ok(value) => return Ok((value, attempt, started)),
                Err(error) => {
                    if let (Some(d), Some(started)) = (durable, started) {
                        // Failed attempts are recorded without waiting: only successes gate what runs next.
                        drop(self.record_unawaited(d, name, attempt, Err(&error), started));
                    }
                    if last || !error.is_retryable() {
                        return Err(self.node_failed(name, attempt, error));
                    }
                    let delay = backoff_delay(options, attempt);
                    tracing::debug!(
                        run_id = %self.run_id, workflow = self.workflow, node = %name, attempt,
                        error = %error, retry_in = ?delay, "node attempt failed; retrying"
                    );
                    match &self.control {
                        None => tokio::time::sleep(delay).await,
                        Some(control) => control.interrupt(self, tokio::time::sleep(delay)).await?,
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// A stateful step: runs with the key's state under the key's lock, and stores the new
    /// state atomically with the step's output (durably when journaled).
    async fn stateful<N: Node>(
        &self,
        name: &StepName<'_>,
        input: N::Input,
        options: &NodeOptions,
    ) -> Result<N::Output, Error> {
        let key = N::state_key(&input);
        let lock = self.state.key_lock(N::NAME, &key);
        let _serialized = lock.lock().await;
        // Across the runners sharing the journal too (issue 12): the step's state record
        // releases the key; a failed step releases it below.
        let shared = self
            .durable
            .as_deref()
            .filter(|d| d.journal.store().shared())
            .map(|d| (d, key.clone()));
        if let Some((d, key)) = &shared {
            d.journal.store().lock_key(N::NAME, key.clone()).await?;
        }
        let result = self.stateful_locked::<N>(name, input, options, key).await;
        if let (Some((d, key)), Err(_)) = (shared, &result) {
            let _ = d.journal.store().unlock_key(N::NAME, key).await;
        }
        result
    }

    async fn stateful_locked<N: Node>(
        &self,
        name: &StepName<'_>,
        input: N::Input,
        options: &NodeOptions,
        key: String,
    ) -> Result<N::Output, Error> {
        let current: Option<Bytes> = match &self.durable {
            Some(d) => d.journal.get_state(N::NAME, key.clone()).await?,
            None => self.state.get(N::NAME, &key),
        };
        let fresh = || -> Result<N::State, Error> {
            match &current {
                Some(bytes) => self.decode(name, bytes),
                None => Ok(N::State::default()),
            }
        };
        // Each attempt starts from the stored state: a failed attempt's changes are dropped.
        let mut states = Vec::new();
        for _ in 0..=options.retries {
            states.push(fresh()?);
        }
        let via = self.isolated(N::NAME, options);
        let ((output, state), attempt, started) = self
            .attempts::<N, _, _, _>(name, input, options, |i| {
                invoke::<N>(via.clone(), i, states.pop().unwrap_or_default())
            })
            .await?;
        let state_bytes = self.encode(name, attempt, &state)?;
        match (self.durable.as_deref(), started) {
            (Some(d), Some(started)) => {
                let bytes = self.encode(name, attempt, &output)?;
                let recorded = self.record(
                    d,
                    name,
                    attempt,
                    Ok(bytes),
                    started,
                    Some((N::NAME, key, state_bytes)),
                );
                // Always durable before the key is released: the next run reads this state.
                recorded.wait(self, d).await?;
            }
            _ => self.state.set(N::NAME, &key, state_bytes),
        }
        Ok(output)
    }

    pub(crate) fn record(
        &self,
        d: &Durable,
        step: &StepName<'_>,
        attempt: u32,
        outcome: Result<Bytes, &NodeError>,
        started: (u64, Instant),
        state: Option<(&'static str, String, Bytes)>,
    ) -> Recorded {
        let write = self.step_write(step, attempt, outcome, started, state);
        self.send_record(d, write, true)
    }

    /// [`RunCtx::record`] for a record nobody waits for (a failed attempt).
    fn record_unawaited(
        &self,
        d: &Durable,
        step: &StepName<'_>,
        attempt: u32,
        outcome: Result<Bytes, &NodeError>,
        started: (u64, Instant),
    ) -> Recorded {
        let write = self.step_write(step, attempt, outcome, started, None);
        self.send_record(d, write, false)
    }

    fn send_record(&self, d: &Durable, write: StepWrite, awaited: bool) -> Recorded {
        // Taking the pending run row and sending under one lock keeps the row ahead of every
        // other record of this run in the writer's queue.
        let mut pending = d.pending_create.lock().unwrap_or_else(|p| p.into_inner());
        let sending = pending.for_record(awaited);
        let create = sending.create.clone();
        let mut deferred = take_deferred(d);
        let commit = if deferred.is_empty() {
            d.journal.record_step(write, create)
        } else {
            deferred.push(write);
            d.journal.record_steps(deferred, create)
        };
        sending.sent(commit)
    }

    fn step_write(
        &self,
        step: &StepName<'_>,
        attempt: u32,
        outcome: Result<Bytes, &NodeError>,
        started: (u64, Instant),
        state: Option<(&'static str, String, Bytes)>,
    ) -> StepWrite {
        let step = step.text();
        StepWrite {
            fingerprint: self
                .durable
                .as_deref()
                .and_then(|d| d.graph.fingerprints().step(&step)),
            run_id: self.run_id,
            step,
            attempt,
            outcome: outcome.map_err(|e| serde_json::to_value(e).unwrap_or_default()),
            started_ms: started.0,
            duration_us: started.1.elapsed().as_micros() as u64,
            state,
        }
    }

    /// Records the run's end (durably) when journaled.
    pub(crate) async fn finish_run(&self, outcome: Result<Bytes, RunError>) -> Result<(), Error> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        // The runs this success starts are recorded in the same transaction: none is lost, and
        // none is recorded for a run whose success is not.
        let chained = match &outcome {
            Ok(output) => d
                .downstream
                .iter()
                .map(|&graph| NewRun {
                    // A limited workflow's chained run waits in its queue like any other.
                    queued: queued_entry(graph, output),
                    run_id: crate::id::chained_run_id(self.run_id, graph.name),
                    workflow: graph.name,
                    input: output.clone(),
                    idempotency_key: Some(crate::id::chain_key(self.run_id)),
                    // The chained run's graph is not at hand; its steps carry their own.
                    fingerprint: None,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let recorded = {
            let mut pending = d.pending_create.lock().unwrap_or_else(|p| p.into_inner());
            let sending = pending.for_record(true);
            let commit = d.journal.finish_with_steps(
                take_deferred(d),
                FinishWrite {
                    run_id: self.run_id,
                    outcome,
                    chained,
                },
                sending.create.clone(),
            );
            sending.sent(commit)
        };
        recorded.wait(self, d).await
    }

    pub(crate) fn is_durable(&self) -> bool {
        self.durable.is_some()
    }

    pub(crate) fn node_failed(&self, node: &StepName<'_>, attempt: u32, error: NodeError) -> Error {
        Error::Node {
            workflow: self.workflow,
            node: node.text(),
            attempt,
            run_id: self.run_id,
            error,
        }
    }
}

/// Where a run of `graph` with JSON `input` waits to start, when `graph` has limits: its key,
/// priority and earliest start (a debounce window's end).
pub(crate) fn queued_entry(graph: &Graph, input: &[u8]) -> Option<crate::store::Queued> {
    if !graph.limits.any() {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(input).unwrap_or_default();
    let debounce = graph.limits.debounce().unwrap_or_default();
    Some(crate::store::Queued {
        key: graph.limits.key_of(&value),
        priority: graph.limits.priority_of(&value),
        due_ms: crate::runs::now_ms() + debounce.as_millis() as u64,
    })
}

/// The records waiting for the run's next one (see [`Durable::deferred`]).
fn take_deferred(d: &Durable) -> Vec<StepWrite> {
    std::mem::take(&mut *d.deferred.lock().unwrap_or_else(|p| p.into_inner()))
}

/// One attempt with the node's timeout, a panic caught as the node's failure.
async fn guarded<T>(
    call: impl Future<Output = Result<T, NodeError>>,
    options: &NodeOptions,
) -> Result<T, NodeError> {
    let call = AssertUnwindSafe(call).catch_unwind();
    let outcome = match options.timeout {
        None => call.await,
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(outcome) => outcome,
            Err(_) => return Err(NodeError::timeout(limit)),
        },
    };
    outcome.unwrap_or_else(|payload| Err(NodeError::panic(panic_message(payload.as_ref()))))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_unique_and_round_trip() {
        let a = RunId::new();
        let b = RunId::new();
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<RunId>().unwrap(), a);
        assert!("xyz".parse::<RunId>().is_err());
    }

    #[test]
    fn run_ids_sort_in_the_order_they_are_made_even_within_a_millisecond() {
        let ids: Vec<RunId> = (0..20_000).map(|_| RunId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let options = NodeOptions {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..NodeOptions::DEFAULT
        };
        for _ in 0..200 {
            let d1 = backoff_delay(&options, 1);
            assert!(
                d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
                "{d1:?}"
            );
            let d2 = backoff_delay(&options, 2);
            assert!(
                d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200),
                "{d2:?}"
            );
            let d5 = backoff_delay(&options, 5);
            assert!(
                d5 >= Duration::from_millis(175) && d5 <= Duration::from_millis(350),
                "{d5:?}"
            );
        }
        assert!(backoff_delay(&options, 40) <= Duration::from_millis(350));
    }
}
