//! Durable waits inside a run: `signal(name: T, timeout = ..)` and `sleep(..)` steps, and what
//! stops a run from outside (a cancellation, its workflow's `#[timeout(..)]`).
//!
//! With a durable journal a run that reaches a wait records it (a `waiting` attempt holding
//! when it is due) and ends its task with [`Error::Waiting`]: the ingress marks it `waiting`
//! and wakes it (a delivered signal, the due time) by resuming it from its journal, like after
//! a restart. Without one (`--journal off`, `Workflow::run`) the run's task waits in memory.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::id::RunId;
use crate::node::Data;
use crate::run::RunCtx;
use crate::runs::now_ms;
use crate::store::{Delivery, StepWrite};

/// What stops a run from outside: its cancellation, and its workflow's deadline.
#[derive(Debug)]
pub(crate) struct RunControl {
    /// Set by [`RunControl::cancel`]: what a step's start reads, without a lock.
    cancelled: std::sync::atomic::AtomicBool,
    /// Wakes the steps in progress when the run is cancelled (no allocation for a run that
    /// never waits on it, unlike a channel).
    cancel: tokio::sync::Notify,
    /// The deadline (ms since the epoch) and the `#[timeout(..)]` it comes from.
    deadline: Option<(u64, Duration)>,
}

impl RunControl {
    /// A control for a run created at `created_ms` whose workflow allows it `timeout`.
    pub(crate) fn new(created_ms: u64, timeout: Option<Duration>) -> Self {
        Self {
            cancelled: std::sync::atomic::AtomicBool::new(false),
            cancel: tokio::sync::Notify::new(),
            deadline: timeout.map(|t| (created_ms.saturating_add(t.as_millis() as u64), t)),
        }
    }

    /// Asks the run to stop: its step in progress is interrupted, compensations run, and it
    /// ends as `cancelled`.
    pub(crate) fn cancel(&self) {
        self.cancelled
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cancel.notify_waiters();
    }

    /// The run's deadline, ms since the epoch.
    pub(crate) fn deadline_ms(&self) -> Option<u64> {
        self.deadline.map(|(at, _)| at)
    }

    fn cancelled(&self, ctx: &RunCtx) -> Error {
        Error::Cancelled {
            workflow: ctx.workflow(),
            run_id: ctx.run_id(),
            superseded_by: None,
        }
    }

    fn timed_out(&self, ctx: &RunCtx, limit: Duration) -> Error {
        Error::WorkflowTimeout {
            workflow: ctx.workflow(),
            run_id: ctx.run_id(),
            limit,
        }
    }

    /// `Err` once the run is cancelled or past its deadline.
    pub(crate) fn check(&self, ctx: &RunCtx) -> Result<(), Error> {
        if self.cancelled.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(self.cancelled(ctx));
        }
        match self.deadline {
            Some((at, limit)) if now_ms() >= at => Err(self.timed_out(ctx, limit)),
            _ => Ok(()),
        }
    }

    /// Runs `work` unless the run is cancelled or reaches its deadline first.
    pub(crate) async fn interrupt<F: Future>(
        &self,
        ctx: &RunCtx,
        work: F,
    ) -> Result<F::Output, Error> {
        self.interrupt_pinned(ctx, std::pin::pin!(work)).await
    }

    /// [`RunControl::interrupt`] of a future pinned by the caller (a step's attempt, not moved
    /// again on its way in).
    pub(crate) async fn interrupt_pinned<F: Future>(
        &self,
        ctx: &RunCtx,
        mut work: std::pin::Pin<&mut F>,
    ) -> Result<F::Output, Error> {
        self.check(ctx)?;
        // Most steps finish on their first poll (a synchronous node): no race to set up then.
        // (Polled once by hand: `futures_util::poll!` needs a feature of futures-util that
        // only some builds enable, and without it `--no-default-features` did not compile.)
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(work.as_mut().poll(cx))).await;
        if let std::task::Poll::Ready(out) = first {
            return Ok(out);
        }
        // Registered before the flag is read again, so that a cancellation between the two
        // is not missed.
        let cancel = self.cancel.notified();
        let mut cancel = std::pin::pin!(cancel);
        cancel.as_mut().enable();
        if self.cancelled.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(self.cancelled(ctx));
        }
        let deadline = async {
            match self.deadline {
                Some((at, _)) => {
                    let left = at.saturating_sub(now_ms());
                    tokio::time::sleep(Duration::from_millis(left)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = cancel => Err(self.cancelled(ctx)),
            () = deadline => Err(self.timed_out(ctx, self.deadline.map(|(_, l)| l).unwrap_or_default())),
            out = work => Ok(out),
        }
    }
}

/// What a `signal` step recorded: the value delivered, or that its timeout passed first.
fn decode_signal<T: Data>(ctx: &RunCtx, step: &str, bytes: &[u8]) -> Result<Option<T>, Error> {
    let changed = |message: String| Error::GraphChanged {
        workflow: ctx.workflow(),
        step: step.to_owned().into(),
        run_id: ctx.run_id(),
        message,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| changed(format!("the recorded signal `{step}` is not JSON: {e}")))?;
    if value.get("timed_out").is_some() {
        return Ok(None);
    }
    let signal = value.get("signal").cloned().unwrap_or_default();
    serde_json::from_value(signal).map(Some).map_err(|e| {
        changed(format!(
            "the recorded signal `{step}` no longer fits its type `{}`: {e}",
            crate::graph::short_type(std::any::type_name::<T>())
        ))
    })
}

/// The record of a delivered signal: `{"signal": value}`.
pub(crate) fn signal_record(value: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(value.len() + 12);
    out.extend_from_slice(b"{\"signal\":");
    out.extend_from_slice(value);
    out.push(b'}');
    Bytes::from(out)
}

/// A step record written outside a node attempt (a wait, a signal).
pub(crate) fn wait_write(
    run_id: RunId,
    step: String,
    attempt: u32,
    outcome: Result<Bytes, serde_json::Value>,
) -> StepWrite {
    StepWrite {
        run_id,
        step: step.into(),
        attempt,
        outcome,
        started_ms: now_ms(),
        duration_us: 0,
        state: None,
        fingerprint: None,
    }
}

/// The attempt number of a wait's record (the `waiting` one): the signal's value is attempt 1.
pub(crate) use crate::store::WAIT_ATTEMPT;

impl RunCtx {
    /// Step `name`: waits for signal `name` (or its timeout) and passes on `(input, value)`.
    #[doc(hidden)]
    pub async fn signal_in<In: Send, T: Data>(
        &self,
        name: &'static str,
        timeout: Option<Duration>,
        input: In,
    ) -> Result<(In, Option<T>), Error> {
        let step = self.name(name).text();
        let value = match self.durable_part() {
            Some(_) => self.durable_signal::<T>(&step, timeout).await?,
            None => self.memory_signal::<T>(&step, timeout).await?,
        };
        Ok((input, value))
    }

    /// Step `name`: waits for signal `name`, without a timeout, and passes on `(input, value)`.
    #[doc(hidden)]
    pub async fn signal_required<In: Send, T: Data>(
        &self,
        name: &'static str,
        input: In,
    ) -> Result<(In, T), Error> {
        let (input, value) = self.signal_in::<In, T>(name, None, input).await?;
        match value {
            Some(value) => Ok((input, value)),
            // Only a timeout records no value, and this signal has none.
            None => Err(Error::GraphChanged {
                workflow: self.workflow(),
                step: self.name(name).text(),
                run_id: self.run_id(),
                message: format!("signal `{name}` recorded a timeout, and it has none any more"),
            }),
        }
    }

    /// Step `name`: waits `duration`, then passes `input` on.
    #[doc(hidden)]
    pub async fn sleep_in<T: Send>(
        &self,
        name: &'static str,
        duration: Duration,
        input: T,
    ) -> Result<T, Error> {
        let step = self.name(name).text();
        if self.durable_part().is_none() {
            let sleep = tokio::time::sleep(duration);
            match &self.control {
                Some(control) => control.interrupt(self, sleep).await?,
                None => sleep.await,
            }
            return Ok(input);
        }
        if let Some(control) = &self.control {
            control.check(self)?;
        }
        let until = self.wait_until(&step, Some(duration)).await?;
        match until {
            Some(at) if at > now_ms() => Err(self.waiting(step, Some(at))),
            _ => Ok(input),
        }
    }

    /// When the wait at `step` ends by itself: recorded by the first arrival, so that a
    /// resumed run keeps its first due time.
    async fn wait_until(&self, step: &str, after: Option<Duration>) -> Result<Option<u64>, Error> {
        let d = self.durable_part().expect("called for journaled runs");
        if let Some(until) = d.waits.get(step) {
            return Ok(*until);
        }
        let until = after.map(|a| now_ms().saturating_add(a.as_millis() as u64));
        let record = serde_json::json!({ "until_ms": until }).to_string();
        let write = wait_write(
            self.run_id(),
            step.to_owned(),
            WAIT_ATTEMPT,
            Ok(Bytes::from(record)),
        );
        let recorded = {
            // The run's row (and the records deferred until its next one) go with it.
            let mut pending = d.pending_create.lock().unwrap_or_else(|p| p.into_inner());
            let sending = pending.for_record(true);
            let mut writes =
                std::mem::take(&mut *d.deferred.lock().unwrap_or_else(|p| p.into_inner()));
            writes.push(write);
            let commit = d.journal.record_steps(writes, sending.create.clone());
            sending.sent(commit)
        };
        recorded.wait(self, d).await?;
        Ok(until)
    }

    /// The error that ends the run's task while it waits at `step` until `until`.
    fn waiting(&self, step: std::borrow::Cow<'static, str>, until: Option<u64>) -> Error {
        let deadline = self.control.as_ref().and_then(|c| c.deadline_ms());
        let due_ms = match (until, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Error::Waiting {
            workflow: self.workflow(),
            run_id: self.run_id(),
            step,
            due_ms,
        }
    }

    async fn durable_signal<T: Data>(
        &self,
        step: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<T>, Error> {
        let d = self.durable_part().expect("journaled");
        if let Some(recorded) = d.resumed.get(step) {
            return decode_signal(self, step, recorded);
        }
        if let Some(control) = &self.control {
            control.check(self)?;
        }
        let until = self.wait_until(step, timeout).await?;
        if until.is_some_and(|at| at <= now_ms()) {
            // The timeout passed: recorded unless a signal got there first.
            let write = wait_write(
                self.run_id(),
                step.to_string(),
                1,
                Ok(Bytes::from_static(b"{\"timed_out\":true}")),
            );
            return match d.journal.store().deliver(write).await? {
                Delivery::Kept | Delivery::Woken(_) => Ok(None),
                _ => {
                    // Delivered meanwhile: read what was.
                    let record = d.journal.get_run(self.run_id()).await?;
                    let value = record.and_then(|r| {
                        r.completed_steps()
                            .into_iter()
                            .find(|(s, _)| s == step)
                            .map(|(_, v)| v)
                    });
                    match value {
                        Some(v) => decode_signal(self, step, &v),
                        None => Ok(None),
                    }
                }
            };
        }
        Err(self.waiting(step.to_owned().into(), until))
    }

    async fn memory_signal<T: Data>(
        &self,
        step: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<T>, Error> {
        let rx = match memory::wait(self.run_id(), step) {
            Ok(early) => return decode_signal(self, step, &early),
            Err(rx) => rx,
        };
        let received = async {
            match timeout {
                Some(t) => tokio::time::timeout(t, rx).await.ok().and_then(Result::ok),
                None => rx.await.ok(),
            }
        };
        let got = match &self.control {
            Some(control) => control.interrupt(self, received).await,
            None => Ok(received.await),
        };
        let got = match got {
            Ok(got) => got,
            Err(e) => {
                memory::close(self.run_id(), step);
                return Err(e);
            }
        };
        match got {
            Some(bytes) => decode_signal(self, step, &bytes),
            None => {
                // Timed out: a signal sent from now on is refused as too late.
                memory::close(self.run_id(), step);
                Ok(None)
            }
        }
    }
}

/// Signals of runs without a durable journal, which wait in their task.
pub(crate) mod memory {
    use super::*;

    enum Slot {
        /// Delivered before the run reached the step.
        Early(Bytes),
        /// The run waits here.
        Waiting(oneshot::Sender<Bytes>),
        /// Delivered, or timed out.
        Closed,
    }

    /// Entries past which closed and early ones are dropped (the oldest runs' early signals).
    const MAX: usize = 10_000;

    static SLOTS: LazyLock<Mutex<HashMap<(RunId, String), Slot>>> = LazyLock::new(Default::default);

    /// The value delivered early, or the receiver the run waits on.
    pub(super) fn wait(run_id: RunId, step: &str) -> Result<Bytes, oneshot::Receiver<Bytes>> {
        let mut slots = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        let key = (run_id, step.to_owned());
        if let Some(Slot::Early(value)) = slots.get(&key) {
            let value = value.clone();
            slots.insert(key, Slot::Closed);
            return Ok(value);
        }
        let (tx, rx) = oneshot::channel();
        slots.insert(key, Slot::Waiting(tx));
        Err(rx)
    }

    pub(super) fn close(run_id: RunId, step: &str) {
        let mut slots = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        slots.insert((run_id, step.to_owned()), Slot::Closed);
    }

    /// Delivers the record of a signal (see [`super::signal_record`]) to a run waiting in
    /// memory, or keeps it for when it reaches the step.
    pub(crate) fn deliver(run_id: RunId, step: &str, record: Bytes) -> Delivery {
        let mut slots = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= MAX {
            slots.retain(|_, s| matches!(s, Slot::Waiting(tx) if !tx.is_closed()));
        }
        let key = (run_id, step.to_owned());
        match slots.remove(&key) {
            Some(Slot::Waiting(tx)) => {
                slots.insert(key, Slot::Closed);
                match tx.send(record) {
                    Ok(()) => Delivery::Kept,
                    Err(_) => Delivery::AlreadyDelivered,
                }
            }
            Some(other @ (Slot::Early(_) | Slot::Closed)) => {
                slots.insert(key, other);
                Delivery::AlreadyDelivered
            }
            None => {
                slots.insert(key, Slot::Early(record));
                Delivery::Kept
            }
        }
    }
}

/// Why a signal was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// No run with this id (in this runner's journal).
    #[error("no run {0}")]
    UnknownRun(RunId),
    /// The run's workflow has no signal of this name.
    #[error("run {run_id} of workflow `{workflow}` waits for no signal `{signal}`")]
    NoSuchSignal {
        /// The run.
        run_id: RunId,
        /// Its workflow.
        workflow: String,
        /// The signal asked for.
        signal: String,
    },
    /// The run ended (or is blocked): it waits for nothing.
    #[error("run {run_id} is {status} and waits for no signal")]
    Finished {
        /// The run.
        run_id: RunId,
        /// Its status.
        status: &'static str,
    },
    /// The signal was delivered already, or its timeout passed.
    #[error("signal `{signal}` of run {run_id} was delivered already (or its timeout passed)")]
    AlreadyDelivered {
        /// The run.
        run_id: RunId,
        /// The signal.
        signal: String,
    },
    /// The value does not fit the signal's type.
    #[error("the value does not fit signal `{signal}`: {error}")]
    Invalid {
        /// The signal.
        signal: String,
        /// What does not fit, and where.
        error: crate::error::InputError,
    },
    /// The journal could not record it: nothing was delivered.
    #[error("the signal could not be recorded: {0}")]
    Journal(String),
}

/// Where signals sent in code (`approve.signal(run_id, value)`) go: the runner serving in this
/// process, when there is one (it records them in its journal).
pub(crate) trait SignalSink: Send + Sync {
    /// Delivers `value` (JSON) as signal `signal` of run `run_id`, a run of `workflow`.
    fn deliver<'a>(
        self: std::sync::Arc<Self>,
        workflow: &'a str,
        run_id: RunId,
        signal: &'a str,
        value: Bytes,
    ) -> crate::graph::BoxFuture<'a, Result<(), SignalError>>;
}

static SINK: std::sync::RwLock<Option<std::sync::Weak<dyn SignalSink>>> =
    std::sync::RwLock::new(None);

/// Makes `sink` (a serving runner) receive the signals sent in code in this process.
pub(crate) fn set_sink(sink: std::sync::Weak<dyn SignalSink>) {
    *SINK.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
}

/// Sends signal `signal` of workflow `workflow` to run `run_id`: through the runner serving in
/// this process (recorded in its journal), or else to a run waiting in memory
/// (`Workflow::run`). What `approve.signal(run_id, value)` calls.
pub async fn send_signal<T: Data>(
    workflow: &'static str,
    run_id: RunId,
    signal: &'static str,
    value: &T,
) -> Result<(), SignalError> {
    let json = serde_json::to_vec(value).map_err(|e| SignalError::Invalid {
        signal: signal.to_owned(),
        error: crate::error::InputError {
            kind: crate::error::InputErrorKind::Data,
            message: format!("does not serialize to JSON: {e}"),
            path: ".".into(),
            line: 0,
            column: 0,
        },
    })?;
    let sink = SINK
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(std::sync::Weak::upgrade);
    match sink {
        Some(sink) => {
            sink.deliver(workflow, run_id, signal, Bytes::from(json))
                .await
        }
        None => match memory::deliver(run_id, signal, signal_record(&json)) {
            Delivery::AlreadyDelivered => Err(SignalError::AlreadyDelivered {
                run_id,
                signal: signal.to_owned(),
            }),
            _ => Ok(()),
        },
    }
}
