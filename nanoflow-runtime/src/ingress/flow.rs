//! Flow control (issue 15): runs of limited workflows wait `queued` until a limit lets them
//! start, runs that reach a signal or a sleep wait `waiting` without a task until they are
//! woken, and runs are cancelled or time out. The store decides (atomically, across runners
//! on PostgreSQL); this module drives it: the queue loop, the wake-up loop, signal delivery,
//! cancellation, and the answers of callers waiting for a queued run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::{oneshot, watch, Notify};

use crate::error::Error;
use crate::graph::{Graph, StepKind};
use crate::id::{RunId, RunIdMap};
use crate::journal::{NewRun, RunRecord};
use crate::runs::{now_ms, RunError, RunStatus};
use crate::store::{Cancel, Delivery, QueueSpec};
use crate::wait::{signal_record, wait_write, RunControl, SignalError};

use super::App;

/// How a run a caller waits for ended, or stopped for now (see [`App::settled`]).
#[derive(Debug, Clone)]
pub(crate) enum Settled {
    /// It succeeded with this output.
    Output(Bytes),
    /// It failed (or was cancelled): the HTTP status and the client's error.
    Failed(u16, RunError),
    /// It waits (a signal, a sleep): it continues without its caller.
    Waiting,
}

impl Settled {
    pub(crate) fn of(result: &Result<Bytes, Error>) -> Self {
        match result {
            Ok(output) => Settled::Output(output.clone()),
            Err(Error::Waiting { .. }) => Settled::Waiting,
            Err(e) => {
                let (status, error) = RunError::from_error(e);
                Settled::Failed(status, error)
            }
        }
    }
}

const SHARDS: usize = 16;

/// The flow-control state of one runner.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    /// The runs this runner executes, with what stops them (cancellation, deadline), in
    /// shards by run id: every run passes here twice.
    controls: [Mutex<RunIdMap<Arc<RunControl>>>; SHARDS],
    /// Callers waiting for a queued run to end (a synchronous HTTP request).
    waiters: Mutex<HashMap<RunId, Vec<oneshot::Sender<Settled>>>>,
    /// How many runs have callers in `waiters`: a run's end looks at the map only if some do.
    waited: std::sync::atomic::AtomicUsize,
    /// Due times of the runs this runner suspended, earliest first.
    timers: Mutex<BinaryHeap<Reverse<(u64, RunId)>>>,
    /// Wakes the wake-up loop (a new due time).
    timer_added: Notify,
    /// Wakes the queue loop (a run queued, a limited run ended).
    queue_changed: Notify,
}

impl Flow {
    /// Registers the control of a run this runner starts executing.
    pub(crate) fn control(&self, run_id: RunId, created_ms: u64, graph: &Graph) -> Arc<RunControl> {
        let control = Arc::new(RunControl::new(created_ms, graph.timeout));
        self.shard(run_id)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id, control.clone());
        control
    }

    fn shard(&self, run_id: RunId) -> &Mutex<RunIdMap<Arc<RunControl>>> {
        &self.controls[(run_id.as_u128() as usize) % SHARDS]
    }

    /// The run no longer executes here.
    pub(crate) fn release(&self, run_id: RunId) {
        self.shard(run_id)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run_id);
    }

    fn running_here(&self, run_id: RunId) -> Option<Arc<RunControl>> {
        self.shard(run_id)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&run_id)
            .cloned()
    }

    /// Tells the callers waiting for `run_id` how it settled.
    pub(crate) fn settle(&self, run_id: RunId, settled: impl FnOnce() -> Settled) {
        if self.waited.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            return;
        }
        let waiting = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            let waiting = waiters.remove(&run_id);
            if waiting.is_some() {
                self.waited
                    .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
            waiting
        };
        if let Some(waiting) = waiting {
            let settled = settled();
            for tx in waiting {
                let _ = tx.send(settled.clone());
            }
        }
    }

    /// A receiver told how `run_id` settles.
    pub(crate) fn wait_for(&self, run_id: RunId) -> oneshot::Receiver<Settled> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let entry = waiters.entry(run_id).or_default();
        if entry.is_empty() {
            self.waited
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        entry.push(tx);
        rx
    }

    fn add_timer(&self, due: u64, run_id: RunId) {
        self.timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Reverse((due, run_id)));
        self.timer_added.notify_one();
    }

    /// Wakes the queue loop.
    pub(crate) fn kick(&self) {
        self.queue_changed.notify_one();
    }
}

/// The signal step `name` of `graph`: `approval`, or `payment/approval` for one inside the
/// sub-workflow step `payment` (as the run records it).
fn signal_def(graph: &Graph, name: &str) -> Option<crate::graph::SignalDef> {
    let (outer, inner) = match name.split_once('/') {
        Some((outer, inner)) => (outer, Some(inner)),
        None => (name, None),
    };
    graph
        .steps
        .iter()
        .find(|s| s.name == outer)
        .and_then(|s| match (s.kind, inner) {
            (StepKind::Signal { signal, .. }, None) => Some(signal),
            (StepKind::Workflow(sub), Some(inner)) => signal_def(sub, inner),
            _ => None,
        })
}

/// The limits of `graph` as the store applies them.
fn spec(graph: &Graph) -> QueueSpec {
    QueueSpec {
        concurrency: graph.limits.concurrency(),
        rate: graph
            .limits
            .rate()
            .map(|(n, per)| (n, per.as_millis().max(1) as u64)),
    }
}

impl App {
    /// Records a run of a limited workflow as `queued` (the key claimed, when it has one);
    /// within a debounce window, the queued runs of its key end `cancelled` (`debounced`).
    /// `Ok(Some(id))`: the idempotency key belongs to run `id`.
    pub(crate) async fn enqueue(
        &self,
        graph: &'static Graph,
        run: NewRun,
    ) -> Result<Option<RunId>, Error> {
        let (run_id, key) = (run.run_id, run.queued.as_ref().map(|q| q.key.clone()));
        match self.journal.create_run(run).await? {
            crate::journal::Created::Existing(original) => return Ok(Some(original)),
            crate::journal::Created::New => {}
        }
        if let (Some(_), Some(key)) = (graph.limits.debounce(), key) {
            let replaced = self
                .journal
                .store()
                .supersede(graph.name, key, run_id)
                .await?;
            for old in replaced {
                tracing::info!(run_id = %old, replaced_by = %run_id, workflow = graph.name, "run debounced: a newer run of its key replaces it");
                self.flow
                    .settle(old, || Settled::Failed(409, RunError::debounced(run_id)));
            }
        }
        self.flow.kick();
        Ok(None)
    }

    /// Starts a run the store handed over (a queued run now allowed, a waiting run woken, a
    /// cancelled waiting run to compensate): from its journal when durable, from its input
    /// otherwise.
    pub(crate) async fn start_recorded(self: &Arc<Self>, record: RunRecord, cancel: bool) {
        let run_id = record.run_id;
        let result = if self.durable().is_some() {
            self.resume_with(record, cancel).await.map(|_| ())
        } else {
            self.start_in_memory(record).await
        };
        if let Err(e) = result {
            tracing::error!(%run_id, error = %e, "cannot start a queued or woken run");
        }
    }

    /// A queued run started without a durable journal (the memory store holds it).
    async fn start_in_memory(self: &Arc<Self>, record: RunRecord) -> Result<(), Error> {
        let Some(wf) = self.workflows.get(record.workflow.as_str()).cloned() else {
            return Err(Error::UnknownWorkflow(record.workflow));
        };
        let graph = wf.graph();
        let control = self.flow.control(record.run_id, record.created_ms, graph);
        let ctx = self.isolate(
            crate::run::RunCtx::with_id(graph.name, record.run_id)
                .observed(self.observe.observer(graph.name))
                .with_control(control),
        );
        let future = wf
            .start(ctx, &record.input)
            .map_err(|e| Error::InvalidInput {
                workflow: graph.name,
                error: e,
            })?;
        let permit = self
            .limiter
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Config("runner stopped".into()))?;
        // Recorded already: it ends in the store like an asynchronous run.
        drop(self.spawn_run(record.run_id, graph.name, future, permit, None));
        Ok(())
    }

    /// After a run's task ended with [`Error::Waiting`]: marks it `waiting` (unless a signal
    /// it waits for arrived meanwhile: then it resumes at once) and arms its timer.
    pub(crate) async fn suspended(
        self: &Arc<Self>,
        run_id: RunId,
        step: &str,
        due_ms: Option<u64>,
    ) {
        let store = self.journal.store();
        match store.suspend(run_id, step.to_owned(), due_ms).await {
            Ok(true) => {
                tracing::info!(%run_id, step, due_ms, "run waits");
                if let Some(due) = due_ms {
                    self.flow.add_timer(due, run_id);
                }
            }
            Ok(false) => match self.journal.get_run(run_id).await {
                Ok(Some(record)) if record.status == RunStatus::Running => {
                    self.start_recorded(record, false).await
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(%run_id, error = %e, "cannot read a run that should resume")
                }
            },
            Err(e) => {
                // Still `running` in the journal: resumed with the stalled runs.
                tracing::warn!(%run_id, error = %e, "cannot record that the run waits; it resumes when the journal writes again");
                self.stalled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(run_id);
            }
        }
    }

    /// Delivers signal `signal` (a JSON `value`) to run `run_id`: recorded (durably, with a
    /// journal) and the run woken if it waits; kept for later if it has not reached the step.
    pub(crate) async fn deliver_signal(
        self: &Arc<Self>,
        run_id: RunId,
        signal: &str,
        value: Bytes,
    ) -> Result<(), SignalError> {
        self.deliver_signal_of(None, run_id, signal, value).await
    }

    /// [`App::deliver_signal`], for a run of `workflow` when given (a signal sent in code
    /// through that workflow's type): a run of another workflow waits for no such signal.
    pub(crate) async fn deliver_signal_of(
        self: &Arc<Self>,
        workflow: Option<&str>,
        run_id: RunId,
        signal: &str,
        value: Bytes,
    ) -> Result<(), SignalError> {
        let journal_error = |e: crate::store::StoreError| SignalError::Journal(e.to_string());
        let record = self
            .journal
            .get_run(run_id)
            .await
            .map_err(|e| SignalError::Journal(e.to_string()))?
            .ok_or(SignalError::UnknownRun(run_id))?;
        let no_such = || SignalError::NoSuchSignal {
            run_id,
            workflow: record.workflow.clone(),
            signal: signal.to_owned(),
        };
        if workflow.is_some_and(|w| w != record.workflow) {
            return Err(no_such());
        }
        let wf = self.workflow_for(&record).ok_or_else(no_such)?;
        let def = signal_def(wf.graph(), signal).ok_or_else(no_such)?;
        (def.check)(&value).map_err(|error| SignalError::Invalid {
            signal: signal.to_owned(),
            error,
        })?;
        if record.status.is_finished() || record.status == RunStatus::Blocked {
            return Err(SignalError::Finished {
                run_id,
                status: record.status.as_str(),
            });
        }
        let recorded = signal_record(&value);
        if self.durable().is_none() {
            return match crate::wait::memory::deliver(run_id, signal, recorded) {
                Delivery::AlreadyDelivered => Err(SignalError::AlreadyDelivered {
                    run_id,
                    signal: signal.to_owned(),
                }),
                _ => Ok(()),
            };
        }
        let write = wait_write(run_id, signal.to_owned(), 1, Ok(recorded));
        match self
            .journal
            .store()
            .deliver(write)
            .await
            .map_err(journal_error)?
        {
            Delivery::UnknownRun => Err(SignalError::UnknownRun(run_id)),
            Delivery::Finished(status) => Err(SignalError::Finished {
                run_id,
                status: status.as_str(),
            }),
            Delivery::AlreadyDelivered => Err(SignalError::AlreadyDelivered {
                run_id,
                signal: signal.to_owned(),
            }),
            Delivery::Kept => Ok(()),
            Delivery::Woken(record) => {
                tracing::info!(%run_id, signal, "signal delivered; the run resumes");
                let app = self.clone();
                tokio::spawn(async move { app.start_recorded(*record, false).await });
                Ok(())
            }
        }
    }

    /// Cancels run `run_id`: a queued or blocked run ends `cancelled` at once; a waiting run
    /// resumes cancelled, and one running here is stopped at once: both run the compensations
    /// of their completed steps and end `cancelled`. The status it ends with (or will).
    pub(crate) async fn cancel_run(self: &Arc<Self>, run_id: RunId) -> Result<Cancelling, Error> {
        if let Some(control) = self.flow.running_here(run_id) {
            control.cancel();
            return Ok(Cancelling::Stopping);
        }
        match self.journal.store().cancel(run_id).await? {
            Cancel::UnknownRun => Ok(Cancelling::Unknown),
            Cancel::Finished(status) => Ok(Cancelling::Finished(status)),
            Cancel::Ended => {
                tracing::info!(%run_id, "run cancelled");
                self.flow
                    .settle(run_id, || Settled::Failed(409, RunError::cancelled()));
                self.flow.kick();
                Ok(Cancelling::Ended)
            }
            Cancel::Woken(record) => {
                tracing::info!(%run_id, "run cancelled while it waited; compensating");
                if self.durable().is_some() {
                    let task = self.resume_with(*record, true).await?;
                    Ok(Cancelling::Compensating(task))
                } else {
                    Ok(Cancelling::Stopping)
                }
            }
            Cancel::Running => Ok(Cancelling::Elsewhere),
        }
    }
}

/// What [`App::cancel_run`] did.
pub(crate) enum Cancelling {
    /// No such run.
    Unknown,
    /// The run had ended.
    Finished(RunStatus),
    /// Ended as `cancelled` now (it was queued or blocked).
    Ended,
    /// It runs here and stops at once, compensating.
    Stopping,
    /// It waited: it resumes cancelled on this task, compensating.
    Compensating(Option<tokio::task::JoinHandle<Result<Bytes, Error>>>),
    /// It runs, but not in this runner (another runner on a shared journal, or a process that
    /// stopped without ending it): ask the runner that executes it.
    Elsewhere,
}

/// Starts queued runs as the limits of their workflows allow: when a run is queued or a
/// limited run ends, and at least every 250 ms (runs of other runners end too).
pub(crate) async fn queue_loop(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let limited: Vec<&'static Graph> = app
        .workflows
        .values()
        .map(|wf| wf.graph())
        .filter(|g| g.limits.any())
        .collect();
    if limited.is_empty() {
        return;
    }
    // Rates and debounce windows open with time, not with events: poll faster then.
    let timed = limited
        .iter()
        .any(|g| g.limits.rate().is_some() || g.limits.debounce().is_some());
    let every = if timed {
        Duration::from_millis(10)
    } else {
        Duration::from_millis(250)
    };
    loop {
        tokio::select! {
            () = app.flow.queue_changed.notified() => {}
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for graph in &limited {
            match app
                .journal
                .store()
                .start_queued(graph.name, spec(graph), now_ms(), 256)
                .await
            {
                Ok(runs) => {
                    for record in runs {
                        app.start_recorded(record, false).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(workflow = graph.name, error = %e, "cannot start queued runs yet")
                }
            }
        }
    }
}

/// Wakes waiting runs at their due time (a sleep's end, a signal's timeout, a deadline):
/// those this runner suspended at their exact time, every other one (suspended before a
/// restart, or by another runner) within a second.
pub(crate) async fn wake_loop(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    if app.durable().is_none() {
        return;
    }
    // The due times of the runs that waited when the runner stopped, to wake each on time;
    // those that fell due while no runner was up wake at once.
    let waiting = app
        .journal
        .list_runs(crate::journal::RunFilter {
            status: Some(RunStatus::Waiting),
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    for run in waiting {
        if let Some(due) = run.due_ms {
            app.flow.add_timer(due, run.run_id);
        }
    }
    loop {
        let next = app
            .flow
            .timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .peek()
            .map(|Reverse((due, _))| *due);
        let now = now_ms();
        let wait = match next {
            Some(due) if due <= now => Duration::ZERO,
            Some(due) => Duration::from_millis((due - now).min(1000)),
            None => Duration::from_millis(1000),
        };
        if !wait.is_zero() {
            tokio::select! {
                () = app.flow.timer_added.notified() => continue,
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        let now = now_ms();
        {
            let mut timers = app.flow.timers.lock().unwrap_or_else(|p| p.into_inner());
            while timers.peek().is_some_and(|Reverse((due, _))| *due <= now) {
                timers.pop();
            }
        }
        match app.journal.store().wake_due(now, 256).await {
            Ok(runs) => {
                for record in runs {
                    tracing::info!(run_id = %record.run_id, "run due: waking it");
                    app.start_recorded(record, false).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot wake due runs yet"),
        }
    }
}

impl crate::wait::SignalSink for App {
    fn deliver<'a>(
        self: Arc<Self>,
        workflow: &'a str,
        run_id: RunId,
        signal: &'a str,
        value: Bytes,
    ) -> crate::graph::BoxFuture<'a, Result<(), SignalError>> {
        Box::pin(async move {
            self.deliver_signal_of(Some(workflow), run_id, signal, value)
                .await
        })
    }
}
