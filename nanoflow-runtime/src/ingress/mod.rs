//! The one way a run starts: admission (a run slot), the run id, the idempotency claim, the
//! record before the acknowledgement, driving the run inline or on its own task, its end, the
//! runs chained after it, and resuming recorded runs. Every trigger, the re-drive and chaining
//! go through here; none touches the server's state otherwise.

pub(crate) mod blocked;
pub(crate) mod chain;
pub(crate) mod flow;
pub(crate) mod fork;
pub(crate) mod lease;
pub(crate) mod reply;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::config::ServeConfig;
use crate::error::Error;
use crate::error::InputError;
use crate::journal::{Created, FinishWrite, Journal, NewRun, RunRecord};
use crate::observability::Observability;
use crate::observability::TraceParent;
use crate::run::{Durable, RunCtx, RunId};
use crate::runs::RunError;
use crate::workflow::{DynWorkflow, JsonRun};

/// A run a trigger asks for: every trigger, chaining and the run API start runs through
/// [`App::submit`].
#[derive(Debug)]
pub(crate) struct Submission {
    /// The workflow to run.
    pub(crate) workflow: Arc<dyn DynWorkflow>,
    /// Its input, as JSON (parsed here: input that does not fit starts nothing).
    pub(crate) input: Bytes,
    /// The run's id (chained runs have theirs from their upstream).
    pub(crate) run_id: RunId,
    /// The trigger's idempotency key: a run with the same workflow and key is the same run.
    pub(crate) key: Option<String>,
    /// The caller's trace, continued by the run's span.
    pub(crate) trace_parent: Option<TraceParent>,
    /// When the run is recorded (with the journal).
    pub(crate) record: Record,
}

/// When a submitted run is recorded in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    /// With its first step: a run answered only once it finished needs no commit of its own.
    /// (A run with a key is always recorded before it starts: the key is claimed.)
    WithFirstStep,
    /// Before `submit` returns: its caller acknowledges it at once (202).
    Now,
    /// With its first record, its idempotency key claimed in the same commit (a queue
    /// message's run: one commit fewer per message). [`Pending::claim`] says when that record
    /// is durable, or that the key is an earlier run's: then nothing of this run was written,
    /// and it stops with [`Error::Duplicate`]. Without a durable journal, or for a queued run
    /// (a workflow with limits), the key is claimed before `submit` returns, as with `Now`.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    Claim,
    /// Already recorded by someone else (a chained run, written with its upstream's success).
    Done,
}

/// What `submit` made of a submission.
#[derive(Debug)]
pub(crate) enum Admitted {
    /// A new run, recorded as asked, ready to be driven.
    New(Pending),
    /// The key belongs to this earlier run: nothing was started.
    Existing(RunId),
}

/// Why `submit` started nothing.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The input does not fit the workflow's input type.
    Input(InputError),
    /// The run could not be recorded (or its key claimed): nothing ran.
    Journal(Error),
}

/// A submission whose record may have landed while its caller went away (see `App::submit`).
struct Abandoned<'a> {
    app: &'a App,
    run_id: RunId,
    armed: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Not executed here now: `resume_stalled` resumes it (with a control of its own)
            // if the journal holds it as running, else forgets it.
            self.app.flow.release(self.run_id);
            self.app
                .stalled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(self.run_id);
        }
    }
}

/// An admitted run, not yet driven.
pub(crate) struct Pending {
    run_id: RunId,
    workflow: &'static str,
    /// `None`: the run is queued (its workflow has limits); the queue loop starts it.
    future: Option<JsonRun>,
    /// Without a durable journal, the input of a run the store does not hold yet (a
    /// synchronous run without a key): recorded at its end if it fails, so that its error's run
    /// id can be looked up. Only the input: the rest of the record is the workflow's, and the
    /// run's futures stay small (issue 16).
    unrecorded: Option<Bytes>,
    /// `Record::Claim`: how the claim of the run's key with its first record fares.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    claim: Option<tokio::sync::oneshot::Receiver<Created>>,
}

/// How the claim of a run's idempotency key fared (see [`Record::Claim`]).
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// The run is durably recorded under the key.
    Recorded,
    /// The key belongs to this earlier run: nothing of the new run was recorded.
    Existing(RunId),
    /// The run's first record failed, or the run ended without one: nothing is known to be
    /// recorded.
    Failed,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("run_id", &self.run_id)
            .field("workflow", &self.workflow)
            .finish()
    }
}

/// A run handed to its own task, or queued: resolves when it ends (a queued run: when it is
/// started and ends, or stops to wait).
pub(crate) struct Started(StartedKind);

enum StartedKind {
    Task(tokio::task::JoinHandle<Result<Bytes, Error>>),
    Queued(tokio::sync::oneshot::Receiver<flow::Settled>),
}

impl std::future::Future for Started {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        match &mut self.0 {
            StartedKind::Task(handle) => std::pin::Pin::new(handle).poll(cx).map(|_| ()),
            StartedKind::Queued(rx) => std::pin::Pin::new(rx).poll(cx).map(|_| ()),
        }
    }
}

impl Pending {
    /// The run's id.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn run_id(&self) -> RunId {
        self.run_id
    }

    /// For a run submitted with [`Record::Claim`], a future that says how the claim fares (the
    /// run must be driven for it to settle); `Recorded` at once for a run recorded already.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn claim(&mut self) -> impl std::future::Future<Output = Claimed> + Send + 'static {
        let rx = self.claim.take();
        async move {
            match rx {
                None => Claimed::Recorded,
                Some(rx) => match rx.await {
                    Ok(Created::New) => Claimed::Recorded,
                    Ok(Created::Existing(original)) => Claimed::Existing(original),
                    Err(_) => Claimed::Failed,
                },
            }
        }
    }

    /// Whether the run is queued (its workflow has limits): it starts when they allow.
    pub(crate) fn is_queued(&self) -> bool {
        self.future.is_none()
    }

    /// Drives the run on its own task, holding `permit` until it ends. A queued run holds
    /// neither a task nor the permit: the queue loop starts it.
    pub(crate) fn spawn(self, app: &Arc<App>, permit: OwnedSemaphorePermit) -> Started {
        match self.future {
            Some(future) => Started(StartedKind::Task(app.spawn_run(
                self.run_id,
                self.workflow,
                future,
                permit,
                self.unrecorded,
            ))),
            None => {
                drop(permit);
                Started(StartedKind::Queued(app.flow.wait_for(self.run_id)))
            }
        }
    }

    /// Drives the run in the caller's task (spawning the rest if the caller goes away). A
    /// queued run is awaited until it ends or waits (without holding `permit`). Not an
    /// `async fn`: the future is the run's own, not one around it (issue 16).
    pub(crate) fn drive(
        self,
        app: &Arc<App>,
        permit: OwnedSemaphorePermit,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send + '_ {
        match self.future {
            Some(future) => futures_util::future::Either::Left(app.drive_inline(
                self.run_id,
                self.workflow,
                future,
                permit,
                self.unrecorded,
            )),
            None => {
                // Queued: nothing to drive here; wait for how it settles. Boxed: the
                // larger future of a limited workflow's run must not weigh on every run's.
                drop(permit);
                futures_util::future::Either::Right(Box::pin(async move {
                    match self.settled(app).await {
                        flow::Settled::Output(output) => Ok(output),
                        flow::Settled::Waiting => Err(Error::Config(
                            "the run waits for a signal or a sleep's end".into(),
                        )),
                        flow::Settled::Failed(_, error) => Err(Error::Config(error.message)),
                    }
                }))
            }
        }
    }

    /// How a queued run settles: it ends, or stops to wait.
    pub(crate) async fn settled(self, app: &Arc<App>) -> flow::Settled {
        let rx = app.flow.wait_for(self.run_id);
        // The run may have ended before the receiver was registered.
        if let Ok(Some(record)) = app.journal.get_run(self.run_id).await {
            if let Some(settled) = settled_from_record(&record) {
                return settled;
            }
        }
        // The sender goes only with the runner: it stopped before the run settled (the run
        // stays recorded and continues after a restart).
        rx.await.unwrap_or_else(|_| {
            flow::Settled::Failed(
                503,
                RunError {
                    code: "shutting_down".into(),
                    message:
                        "the runner stopped before the run ended; it continues after a restart"
                            .into(),
                    node: None,
                    step: None,
                },
            )
        })
    }
}

/// How a recorded run settled, when it has.
fn settled_from_record(record: &RunRecord) -> Option<flow::Settled> {
    use crate::runs::RunStatus;
    match record.status {
        RunStatus::Succeeded => Some(flow::Settled::Output(
            record.output.clone().unwrap_or_default(),
        )),
        RunStatus::Waiting => Some(flow::Settled::Waiting),
        RunStatus::Failed | RunStatus::Cancelled | RunStatus::Blocked => {
            let error: RunError = record
                .error
                .clone()
                .and_then(|e| serde_json::from_value(e).ok())
                .unwrap_or_else(RunError::cancelled);
            let status = match error.code.as_str() {
                "cancelled" | "debounced" | "graph_changed" => 409,
                "workflow_timeout" | "node_timeout" => 504,
                _ => 500,
            };
            Some(flow::Settled::Failed(status, error))
        }
        RunStatus::Running | RunStatus::Queued => None,
    }
}

/// State shared by every handler and trigger loop.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) workflows: BTreeMap<&'static str, Arc<dyn DynWorkflow>>,
    pub(crate) limiter: Arc<Semaphore>,
    pub(crate) config: ServeConfig,
    /// Where runs are recorded: a durable store (SQLite, by default), or with `--journal off`
    /// a bounded `MemoryStore` that serves `GET /runs` without durability. One record shape
    /// either way.
    pub(crate) journal: Journal,
    /// `journal.durable()`, read once.
    durable: bool,
    pub(crate) containers: Option<crate::run::Isolated>,
    /// For each workflow, the workflows chained `after` it.
    pub(crate) downstream: chain::Downstream,
    /// Connections of the queue and database-event triggers.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) services: crate::triggers::Services,
    /// Metrics and the live event stream.
    pub(crate) observe: Arc<Observability>,
    /// Dashboard sessions and the admin token's throttle.
    pub(crate) admin: crate::admin::AdminState,
    /// Turns true when the runner stops: trigger loops end, body reads in progress give up.
    pub(crate) stop: watch::Sender<bool>,
    /// Recorded runs that stopped because the journal failed under them: resumed once it
    /// writes again.
    pub(crate) stalled: Mutex<Vec<RunId>>,
    /// This runner's keyed state of stateful nodes (without a journal) and per-key locks.
    pub(crate) keyed: Arc<crate::state::KeyedState>,
    /// Flow control: what stops each run, callers waiting for queued runs, due times.
    pub(crate) flow: flow::Flow,
    /// Whether any workflow has `#[limit(..)]`s (their runs' ends move the queue).
    limited: bool,
}

impl std::fmt::Debug for dyn DynWorkflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Workflow({})", self.graph().name)
    }
}

impl App {
    /// The journal when it is durable: runs are recorded step by step and resume after a crash.
    pub(crate) fn durable(&self) -> Option<&Journal> {
        self.durable.then_some(&self.journal)
    }

    /// The one way a run starts: parses the input (refusing it before anything is written),
    /// claims the idempotency key or records the run as `record` asks, and hands back the run
    /// to drive. The caller holds a run slot (`limiter`) and passes it to the run.
    #[allow(clippy::manual_async_fn)] // an `async fn` holds its arguments twice
    pub(crate) fn submit(
        &self,
        s: Submission,
    ) -> impl Future<Output = Result<Admitted, Refused>> + Send + '_ {
        // A block, not an `async fn`, which would keep the submission twice in its future.
        async move {
            let graph = s.workflow.graph();
            // A key is claimed with the first record only where the record makes it durable, and
            // for a run that starts now (a queued one is recorded as it is queued).
            let record = match s.record {
                Record::Claim
                    if s.key.is_none()
                        || !self.durable
                        || crate::run::queued_entry(graph, &s.input).is_some() =>
                {
                    Record::Now
                }
                record => record,
            };
            let recorded_here = match record {
                Record::WithFirstStep => s.key.is_some(),
                Record::Claim => false,
                Record::Now | Record::Done => true,
            };
            let (claim_tx, claim) = match record {
                Record::Claim => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    (Some(tx), Some(rx))
                }
                _ => (None, None),
            };
            // A run recorded before it starts needs no row written with its first step.
            let ctx = self.context_recorded(
                &*s.workflow,
                s.run_id,
                &s.input,
                s.key.clone(),
                recorded_here,
                claim_tx,
                s.trace_parent,
            );
            let future = s.workflow.start(ctx, &s.input).map_err(|e| {
                self.flow.release(s.run_id);
                Refused::Input(e)
            })?;
            if let Some(queued) = crate::run::queued_entry(graph, &s.input) {
                // Checked above; the run starts from its record when its limits allow.
                drop(future);
                self.flow.release(s.run_id);
                let pending = Pending {
                    run_id: s.run_id,
                    workflow: graph.name,
                    future: None,
                    unrecorded: None,
                    claim: None,
                };
                if record == Record::Done {
                    // A chained run, recorded queued with its upstream's success.
                    self.flow.kick();
                    return Ok(Admitted::New(pending));
                }
                let run = NewRun {
                    run_id: s.run_id,
                    workflow: graph.name,
                    input: s.input.clone(),
                    idempotency_key: s.key.clone(),
                    fingerprint: Some(graph.fingerprint()),
                    queued: Some(queued),
                };
                // Boxed: only limited workflows queue (see `after`).
                return match Box::pin(self.enqueue(graph, run)).await {
                    Ok(Some(original)) => Ok(Admitted::Existing(original)),
                    Ok(None) => Ok(Admitted::New(pending)),
                    Err(e) => Err(Refused::Journal(e)),
                };
            }
            // The record is written by the journal's own thread whatever happens to this future: if
            // the caller goes away while it waits (a client hanging up), the run is handed to the
            // loop that resumes stalled runs, instead of staying recorded and undriven until a restart.
            let mut abandoned = Abandoned {
                app: self,
                run_id: s.run_id,
                armed: self.durable,
            };
            match (&s.key, record) {
                (_, Record::Done | Record::Claim) => {}
                (Some(key), _) => {
                    // Boxed, as the creation below: only runs with a key or answered at once
                    // write here, and the run's future need not hold room for it.
                    match Box::pin(self.claim_idempotency_key(graph.name, key, s.run_id, &s.input))
                        .await
                    {
                        None => {}
                        Some(Ok(original)) => {
                            abandoned.armed = false;
                            self.flow.release(s.run_id);
                            return Ok(Admitted::Existing(original));
                        }
                        Some(Err(e)) => {
                            abandoned.armed = false;
                            self.flow.release(s.run_id);
                            return Err(Refused::Journal(e));
                        }
                    }
                }
                (None, Record::Now) => {
                    let run = NewRun {
                        queued: None,
                        run_id: s.run_id,
                        workflow: graph.name,
                        input: s.input.clone(),
                        idempotency_key: None,
                        fingerprint: Some(graph.fingerprint()),
                    };
                    if let Err(e) = Box::pin(self.journal.create_run(run)).await {
                        abandoned.armed = false;
                        self.flow.release(s.run_id);
                        return Err(Refused::Journal(e));
                    }
                }
                (None, Record::WithFirstStep) => {}
            }
            abandoned.armed = false;
            let unrecorded = (!self.durable && !recorded_here).then_some(s.input);
            Ok(Admitted::New(Pending {
                run_id: s.run_id,
                workflow: graph.name,
                future: Some(future),
                unrecorded,
                claim,
            }))
        }
    }

    /// The context of a new run: journaled when the journal is on. `recorded`: the run row is
    /// written before the run starts, not with its first record (input that fails to parse
    /// writes nothing either way).
    #[allow(clippy::too_many_arguments)]
    fn context_recorded(
        &self,
        wf: &dyn DynWorkflow,
        run_id: RunId,
        input: &Bytes,
        idempotency_key: Option<String>,
        recorded: bool,
        claim: Option<tokio::sync::oneshot::Sender<Created>>,
        trace_parent: Option<TraceParent>,
    ) -> RunCtx {
        let graph = wf.graph();
        let durable = self.durable().map(|journal| Durable {
            waits: Default::default(),
            journal: journal.clone(),
            graph,
            resumed: Default::default(),
            pending_create: Mutex::new(crate::run::PendingCreate::new(
                (!recorded).then(|| NewRun {
                    queued: None,
                    run_id,
                    workflow: graph.name,
                    input: input.clone(),
                    idempotency_key,
                    fingerprint: Some(graph.fingerprint()),
                }),
                claim,
            )),
            deferred: Mutex::default(),
            downstream: self.downstream_of(graph.name),
        });
        // The clock is read only for a workflow with a deadline, the one use of the time.
        let created_ms = graph.timeout.map_or(0, |_| crate::runs::now_ms());
        RunCtx::for_runner(
            graph.name,
            run_id,
            crate::run::RunnerParts {
                durable,
                containers: self.containers.clone(),
                state: self.keyed.clone(),
                observer: self.observe.observer(graph.name),
                control: self.flow.control(run_id, created_ms, graph),
                trace_parent,
            },
        )
    }

    fn isolate(&self, ctx: RunCtx) -> RunCtx {
        ctx.with_containers(self.containers.clone())
            .with_state(self.keyed.clone())
    }

    /// Claims an idempotency key for `run_id`. `None`: the key is new and the run is recorded
    /// (durably, with a durable journal); `Some(Ok(id))`: the key belongs to run `id`.
    async fn claim_idempotency_key(
        &self,
        workflow: &'static str,
        key: &str,
        run_id: RunId,
        input: &Bytes,
    ) -> Option<Result<RunId, Error>> {
        let run = NewRun {
            queued: None,
            run_id,
            workflow,
            input: input.clone(),
            idempotency_key: Some(key.to_owned()),
            fingerprint: self
                .workflows
                .get(workflow)
                .map(|wf| wf.graph().fingerprint()),
        };
        match self.journal.create_run(run).await {
            Ok(Created::New) => None,
            Ok(Created::Existing(original)) => Some(Ok(original)),
            Err(e) => Some(Err(e)),
        }
    }

    /// Drives a started run on its own task (it completes even if its caller goes away),
    /// holding `permit` until it ends, and records and logs its end.
    pub(crate) fn spawn_run(
        self: &Arc<Self>,
        run_id: RunId,
        workflow: &'static str,
        future: JsonRun,
        permit: OwnedSemaphorePermit,
        unrecorded: Option<Bytes>,
    ) -> tokio::task::JoinHandle<Result<Bytes, Error>> {
        self.observe.run_started(run_id, workflow);
        let app = self.clone();
        tokio::spawn(async move {
            // Without a durable journal, a spawned run (a cron tick) is kept in the memory
            // store while it runs, as an asynchronous one is.
            if let Some(input) = unrecorded {
                if let Err(e) = app
                    .journal
                    .create_run(app.unrecorded_run(run_id, workflow, input))
                    .await
                {
                    tracing::warn!(%run_id, error = %e, "cannot keep the run in memory");
                }
            }
            let started = Instant::now();
            let result = future.await;
            app.finish(run_id, workflow, started, &result, None);
            drop(permit);
            app.after(run_id, workflow, &result).await;
            result
        })
    }

    /// Drives a started run in the caller's task (no hop to another task on the hot path).
    /// If the caller is dropped before the run ends (the HTTP client went away), the rest of
    /// the run is spawned, so an accepted run always completes.
    #[allow(clippy::manual_async_fn)] // an `async fn` holds its arguments twice
    pub(crate) fn drive_inline(
        self: &Arc<Self>,
        run_id: RunId,
        workflow: &'static str,
        future: JsonRun,
        permit: OwnedSemaphorePermit,
        unrecorded: Option<Bytes>,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send + '_ {
        async move {
            // Without a durable journal, a synchronous run that succeeds is not kept: its client
            // has the output. A failed one is (its error names the run id), and so are runs with
            // an idempotency key (a repeat must find them: recorded when the key was claimed).
            self.observe.run_started(run_id, workflow);
            let mut driving = Driving {
                app: self,
                run_id,
                workflow,
                started: Instant::now(),
                future: Some(future),
                permit: Some(permit),
                unrecorded,
            };
            let result = driving
                .future
                .as_mut()
                .expect("present until the run ends")
                .await;
            driving.future = None;
            let (permit, unrecorded) = (driving.permit.take(), driving.unrecorded.take());
            self.finish(run_id, workflow, driving.started, &result, unrecorded);
            drop(permit);
            if let Err(Error::Waiting {
                workflow,
                run_id,
                step,
                due_ms,
            }) = &result
            {
                // Recording the wait awaits the journal: on a task of its own, which completes
                // even if this caller goes away meanwhile.
                let app = self.clone();
                let waiting = Err(Error::Waiting {
                    workflow,
                    run_id: *run_id,
                    step: step.clone(),
                    due_ms: *due_ms,
                });
                let (run_id, workflow) = (*run_id, *workflow);
                let _ =
                    tokio::spawn(async move { app.after(run_id, workflow, &waiting).await }).await;
            } else {
                // Nothing in it awaits for a run that does not wait: it ends in this poll.
                self.after(run_id, workflow, &result).await;
            }
            result
        }
    }

    /// What follows a run's task: a run that waits is marked so (its task ends here); callers
    /// of a queued run learn how it settled; a limited workflow's queue may move.
    async fn after(
        self: &Arc<Self>,
        run_id: RunId,
        workflow: &'static str,
        result: &Result<Bytes, Error>,
    ) {
        self.flow.release(run_id);
        if let Err(Error::Waiting { step, due_ms, .. }) = result {
            // Boxed: a large future, awaited only by runs that wait, which every run's
            // future would otherwise carry (issue 16).
            Box::pin(self.suspended(run_id, step, *due_ms)).await;
        }
        self.flow.settle(run_id, || flow::Settled::of(result));
        if self.limited
            && self
                .workflows
                .get(workflow)
                .is_some_and(|wf| wf.graph().limits.any())
        {
            self.flow.kick();
        }
    }

    /// The workflows chained `after` `workflow`.
    fn downstream_of(&self, workflow: &str) -> Vec<&'static crate::graph::Graph> {
        self.downstream
            .get(workflow)
            .into_iter()
            .flatten()
            .filter_map(|name| self.workflows.get(name).map(|wf| wf.graph()))
            .collect()
    }

    /// Records a finished run (a durable journal has it already, written by the run with its
    /// last step), logs one line for it, and starts the runs chained after it. `unrecorded`:
    /// the run the (memory) store does not hold yet.
    fn finish(
        self: &Arc<Self>,
        run_id: RunId,
        workflow: &'static str,
        started: Instant,
        result: &Result<Bytes, Error>,
        unrecorded: Option<Bytes>,
    ) {
        let took = started.elapsed();
        self.observe.run_finished(run_id, workflow, took, result);
        let duration_ms = took.as_secs_f64() * 1000.0;
        match result {
            Ok(output) => {
                tracing::info!(%run_id, workflow, status = "succeeded", duration_ms, "run finished");
                if !self.durable && unrecorded.is_none() {
                    self.record_end(run_id, workflow, Ok(output.clone()), None);
                }
                chain::start(self, run_id, workflow, output);
            }
            Err(Error::Journal(why)) if self.durable => {
                tracing::warn!(%run_id, workflow, error = %why, "run stopped: the journal cannot write; it resumes when the journal recovers, if it was recorded");
                self.stalled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(run_id);
            }
            Err(Error::Waiting { step, due_ms, .. }) => {
                tracing::info!(%run_id, workflow, status = "waiting", step = %step, due_ms, "run waits");
            }
            Err(Error::Duplicate { original, .. }) => {
                // Nothing of it was recorded: the earlier run is the one.
                tracing::debug!(%run_id, workflow, %original, "run dropped: its key belongs to an earlier run");
            }
            Err(error @ Error::Cancelled { .. }) => {
                tracing::info!(%run_id, workflow, status = "cancelled", duration_ms, error = %error, "run finished");
                if !self.durable {
                    self.record_end(
                        run_id,
                        workflow,
                        Err(RunError::from_error(error).1),
                        unrecorded,
                    );
                }
            }
            Err(error @ Error::GraphChanged { .. }) => {
                tracing::warn!(%run_id, workflow, status = "blocked", error = %error, "run parked: retry it from the start or cancel it (`runs retry --from-start`, `runs cancel`)");
            }
            Err(error) => {
                tracing::warn!(%run_id, workflow, status = "failed", duration_ms, error = %error, "run finished");
                if !self.durable {
                    self.record_end(
                        run_id,
                        workflow,
                        Err(RunError::from_error(error).1),
                        unrecorded,
                    );
                }
            }
        }
    }

    /// The record of a run of `workflow` on `input` that the (memory) store does not hold yet.
    fn unrecorded_run(&self, run_id: RunId, workflow: &'static str, input: Bytes) -> NewRun {
        NewRun {
            queued: None,
            run_id,
            workflow,
            input,
            idempotency_key: None,
            fingerprint: self
                .workflows
                .get(workflow)
                .map(|wf| wf.graph().fingerprint()),
        }
    }

    /// Records the end of a run in the (memory) store, with its creation (from its input) when
    /// it has none yet.
    fn record_end(
        &self,
        run_id: RunId,
        workflow: &'static str,
        outcome: Result<Bytes, RunError>,
        unrecorded: Option<Bytes>,
    ) {
        let create = unrecorded.map(|input| self.unrecorded_run(run_id, workflow, input));
        let write = FinishWrite {
            run_id,
            outcome,
            chained: Vec::new(),
        };
        // A memory store applies a write when it is issued; nothing waits for it.
        drop(self.journal.finish(write, create));
    }

    /// Continues a journaled run from its last completed step (after a restart, or a re-drive
    /// of a failed run from its failed step).
    pub(crate) async fn resume(
        self: &Arc<Self>,
        record: RunRecord,
    ) -> Result<Option<tokio::task::JoinHandle<Result<Bytes, Error>>>, Error> {
        self.resume_with(record, false).await
    }

    /// [`App::resume`]; `cancelled`: the run is resumed to be cancelled (it stops at its first
    /// step or wait, runs its compensations and ends `cancelled`).
    pub(crate) async fn resume_with(
        self: &Arc<Self>,
        record: RunRecord,
        cancelled: bool,
    ) -> Result<Option<tokio::task::JoinHandle<Result<Bytes, Error>>>, Error> {
        let Some(journal) = self.durable() else {
            return Ok(None);
        };
        if !journal.store().owns(record.run_id) {
            // A shared journal: another runner took the run over (or never gave it up).
            tracing::info!(run_id = %record.run_id, "not resuming: another runner owns the run");
            return Ok(None);
        }
        let Some(wf) = self.workflow_for(&record) else {
            tracing::error!(run_id = %record.run_id, workflow = %record.workflow, "cannot resume: no such workflow in this runner");
            return Ok(None);
        };
        let graph = wf.graph();
        if self.park_if_changed(journal, graph, &record).await? {
            return Ok(None);
        }
        let resumed = record.completed_steps().into_iter().collect();
        let control = self.flow.control(record.run_id, record.created_ms, graph);
        if cancelled {
            control.cancel();
        }
        let ctx = self.isolate(
            RunCtx::durable(
                graph.name,
                record.run_id,
                Durable {
                    journal: journal.clone(),
                    graph,
                    resumed,
                    pending_create: Mutex::default(),
                    deferred: Mutex::default(),
                    downstream: self.downstream_of(graph.finishes().unwrap_or(graph.name)),
                    waits: record.waits(),
                },
            )
            .observed(self.observe.observer(graph.name))
            .with_control(control),
        );
        let future = match wf.start(ctx, &record.input) {
            Ok(f) => f,
            Err(e) => {
                self.flow.release(record.run_id);
                tracing::error!(run_id = %record.run_id, error = %e, "cannot resume: the journaled input no longer fits");
                return Ok(None);
            }
        };
        let permit = self
            .limiter
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Config("runner stopped".into()))?;
        tracing::info!(run_id = %record.run_id, workflow = graph.name, completed_steps = record.completed_steps().len(), "resuming run");
        Ok(Some(self.spawn_run(
            record.run_id,
            graph.name,
            future,
            permit,
            None,
        )))
    }

    pub(crate) fn new(
        workflows: &BTreeMap<&'static str, Arc<dyn DynWorkflow>>,
        config: &ServeConfig,
        containers: Option<crate::run::Isolated>,
    ) -> Result<Arc<Self>, Error> {
        let journal = match &config.journal {
            Some(path) => {
                Journal::open_with(path, config.runner_id.as_deref(), Some(config.lease))?
            }
            None => Journal::new(crate::store::memory::MemoryStore::bounded(config.keep_runs)),
        };
        let durable = journal.store().durable();
        let observe = Observability::new(workflows.values().map(|wf| wf.graph()), config.metrics);
        Ok(Arc::new(App {
            observe,
            workflows: workflows.clone(),
            limiter: Arc::new(Semaphore::new(config.max_in_flight)),
            config: config.clone(),
            journal,
            durable,
            containers,
            downstream: chain::downstream(workflows),
            services: Default::default(),
            admin: Default::default(),
            stop: watch::channel(false).0,
            stalled: Mutex::new(Vec::new()),
            keyed: Default::default(),
            flow: Default::default(),
            limited: workflows.values().any(|wf| wf.graph().limits.any()),
        }))
    }
}

/// A run driven in its caller's task: if the caller goes away before the run ends, the rest of
/// the run (and what follows its end) is spawned, so that an accepted run always completes.
/// Not boxed again around the run's future: one allocation less per run (issue 16).
struct Driving<'a> {
    app: &'a Arc<App>,
    run_id: RunId,
    workflow: &'static str,
    started: Instant,
    future: Option<JsonRun>,
    permit: Option<OwnedSemaphorePermit>,
    unrecorded: Option<Bytes>,
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        let app = self.app.clone();
        let (run_id, workflow, started) = (self.run_id, self.workflow, self.started);
        let (permit, unrecorded) = (self.permit.take(), self.unrecorded.take());
        tokio::spawn(async move {
            let result = future.await;
            app.finish(run_id, workflow, started, &result, unrecorded);
            drop(permit);
            app.after(run_id, workflow, &result).await;
        });
    }
}

/// Resumes the recorded runs that stopped while the journal failed, once it writes again, and
/// the recorded runs whose submitter went away before driving them.
pub(crate) async fn resume_stalled(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let Some(journal) = app.durable().cloned() else {
        return;
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        if journal.health().is_err() {
            continue;
        }
        let stalled = std::mem::take(&mut *app.stalled.lock().unwrap_or_else(|p| p.into_inner()));
        for run_id in stalled {
            match journal.get_run(run_id).await {
                Ok(Some(record)) if record.status == crate::runs::RunStatus::Running => {
                    if let Err(e) = app.resume(record).await {
                        tracing::error!(%run_id, error = %e, "cannot resume a run stopped by the journal");
                    }
                }
                // Never recorded: its client was told it stopped for good.
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%run_id, error = %e, "cannot read a stalled run yet");
                    app.stalled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(run_id);
                }
            }
        }
    }
}
