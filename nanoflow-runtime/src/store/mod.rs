//! The storage contract of runs: [`RunStore`], what each operation guarantees, and its
//! implementations: [`sqlite::SqliteStore`] (the embedded default, a file) and
//! [`memory::MemoryStore`] (in memory, for tests and as the reference the others are held to).
//! [`conformance`] is the suite every implementation passes.
//!
//! ## The contract
//! - **Durability.** When a write's future (or [`Commit`]) resolves `Ok`, the write survives a
//!   crash of the process (for a durable store: [`RunStore::durable`]).
//! - **Ordering.** Writes of one run are applied in the order they were issued: a run's
//!   creation handed to `record_step` or `finish` is applied before the record it travels with,
//!   and in the same transaction.
//! - **Atomicity.** A step's record and its node's new state are written together or not at
//!   all; a run's finish and the runs it chains are written together or not at all.
//! - **Idempotency.** Creating a run whose workflow and idempotency key exist returns the
//!   existing run ([`Created::Existing`]) and changes nothing.
//! - **Claims with the first record.** A creation with an idempotency key handed to
//!   `record_step`, `record_steps`, `finish` or `finish_with_steps` is a claim: if another run
//!   holds its workflow and key, nothing of the write is applied (neither the run nor what
//!   travels with it) and its commit fails with [`StoreError::KeyTaken`] naming that run. The
//!   same creation handed again with a later record of the same run (sent before the first one
//!   was known durable) is applied once.
//! - **Blocked runs.** A run finished with an error whose code is `graph_changed`
//!   ([`RunError::blocks`]) is recorded as [`RunStatus::Blocked`], not failed: it is neither
//!   resumed at start ([`RunStore::unfinished_runs`]) nor pruned, until [`RunStore::reopen`] or
//!   [`RunStore::reset`] runs it again, or it is cancelled (finished as failed).
//! - **Fingerprints.** A run's workflow fingerprint and each step record's fingerprints are
//!   stored as given and read back unchanged (issue 13).
//! - **Errors.** Every operation reports a typed [`StoreError`]; `Unavailable` is transient
//!   (a full disk, a lost connection) and [`RunStore::health`] says when it ends.

pub mod conformance;
pub mod memory;
pub mod metered;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::fingerprint::{Fingerprint, StepPrint};
use crate::id::RunId;
use crate::runs::{RunError, RunStatus};

/// A run to record, with the JSON input it started from.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The run.
    pub run_id: RunId,
    /// Its workflow.
    pub workflow: &'static str,
    /// The input, as JSON.
    pub input: Bytes,
    /// The trigger's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// The fingerprint of the workflow's graph that starts it.
    pub fingerprint: Option<Fingerprint>,
    /// For a workflow with `#[limit(..)]`: the run is recorded `queued`, to be started by
    /// [`RunStore::start_queued`].
    pub queued: Option<Queued>,
}

/// Where a run of a limited workflow waits to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The limits' key (`""` when they are not keyed).
    pub key: String,
    /// Higher starts first.
    pub priority: i64,
    /// Not before this time, ms since the epoch (a debounce window's end).
    pub due_ms: u64,
}

/// The limits [`RunStore::start_queued`] applies to one workflow's queued runs, per key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSpec {
    /// At most this many of its runs running or waiting at once, per key.
    pub concurrency: Option<u32>,
    /// At most `.0` runs started per `.1` milliseconds, per key.
    pub rate: Option<(u32, u64)>,
}

/// Which of a workflow's queued runs `spec` lets start at `now` (ms), at most `limit`: `queued`
/// holds `(run, key, due_ms)` in queue order (priority, then arrival), `counts` per key the runs
/// holding a slot (running or waiting) and those started within the rate's window. A key's
/// first run that must wait holds back the key's later ones. What every store's
/// [`RunStore::start_queued`] decides, in its own transaction.
pub(crate) fn runs_to_start(
    queued: Vec<(RunId, String, Option<u64>)>,
    mut counts: std::collections::HashMap<String, (u64, u64)>,
    spec: QueueSpec,
    now: u64,
    limit: usize,
) -> Vec<RunId> {
    let mut held = std::collections::HashSet::new();
    let mut started = Vec::new();
    for (run_id, key, due) in queued {
        if started.len() >= limit {
            break;
        }
        if held.contains(&key) {
            continue;
        }
        let (busy, recent) = counts.get(&key).copied().unwrap_or((0, 0));
        let free = spec.concurrency.is_none_or(|c| busy < u64::from(c))
            && spec.rate.is_none_or(|(n, _)| recent < u64::from(n))
            && due.is_none_or(|d| d <= now);
        if !free {
            held.insert(key);
            continue;
        }
        counts.insert(key, (busy + 1, recent + 1));
        started.push(run_id);
    }
    started
}

/// What [`RunStore::deliver`] did with a signal (or a timeout) for a step.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// No such run.
    UnknownRun,
    /// The run ended (or is blocked): nothing was recorded.
    Finished(RunStatus),
    /// The step has its value already (a signal delivered, a timeout passed): nothing was
    /// recorded.
    AlreadyDelivered,
    /// Recorded; the run is running or queued and reads it when it reaches the step.
    Kept,
    /// Recorded, and the run, which was waiting, is running again (owned by this runner): here
    /// with its timeline, to resume.
    Woken(Box<RunRecord>),
}

/// What [`RunStore::cancel`] did.
#[derive(Debug, Clone)]
pub enum Cancel {
    /// No such run.
    UnknownRun,
    /// The run had ended already.
    Finished(RunStatus),
    /// The run was queued or blocked (no step to undo running): it is now `cancelled`.
    Ended,
    /// The run was waiting: it is running again (owned by this runner), here with its timeline,
    /// to be resumed cancelled so that its compensations run.
    Woken(Box<RunRecord>),
    /// The run is running: whoever executes it must stop it.
    Running,
}

/// What recording a new run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The run is new.
    New,
    /// A run with the same workflow and idempotency key exists: this is its id.
    Existing(RunId),
}

/// One attempt of one step, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// The step (node name or alias).
    pub step: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// `succeeded` or `failed`.
    pub status: &'static str,
    /// The output (JSON), when succeeded.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::runs::raw_json"
    )]
    pub output: Option<Bytes>,
    /// The error, when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
    /// Start, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// The step's fingerprints in the graph that recorded it (none in journals older than
    /// fingerprints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<StepPrint>,
}

/// A run as the journal holds it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// The run's id.
    pub run_id: RunId,
    /// Its workflow.
    pub workflow: String,
    /// Running, succeeded or failed.
    pub status: RunStatus,
    /// The input (JSON).
    #[serde(serialize_with = "crate::runs::raw_json_required")]
    pub input: Bytes,
    /// The output (JSON), once succeeded.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::runs::raw_json"
    )]
    pub output: Option<Bytes>,
    /// The error, once failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
    /// The trigger's idempotency key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// End time, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// The fingerprint of the workflow's graph that started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    /// The run this one was forked from (`runs fork`), reusing some of its step outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<RunId>,
    /// When a waiting run wakes by itself (a sleep's end, a signal's timeout, its deadline), or
    /// a queued run may start (a debounce window's end), ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_ms: Option<u64>,
    /// Every attempt of every step, in order (filled by `get_run`, empty in lists).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Attempt>,
}

impl RunRecord {
    /// The output of each step's successful attempt: what a resumed run skips. A step whose
    /// compensation ran (a record `step~compensation`) is not complete any more, and
    /// compensation records are never skipped.
    pub fn completed_steps(&self) -> Vec<(String, Bytes)> {
        let succeeded = || self.timeline.iter().filter(|a| a.status == "succeeded");
        let compensated: Vec<&str> = succeeded()
            .filter_map(|a| a.step.split_once('~').map(|(s, _)| s))
            .collect();
        succeeded()
            .filter(|a| !a.step.contains('~') && !compensated.contains(&a.step.as_str()))
            .filter_map(|a| a.output.clone().map(|o| (a.step.clone(), o)))
            .collect()
    }

    /// The waits the run recorded (`signal` and `sleep` steps), by step: when each ends by
    /// itself, ms since the epoch (`None`: a signal without a timeout).
    pub fn waits(&self) -> std::collections::HashMap<String, Option<u64>> {
        self.timeline
            .iter()
            .filter(|a| a.status == "waiting")
            .map(|a| {
                let until = a
                    .output
                    .as_deref()
                    .and_then(|o| serde_json::from_slice::<serde_json::Value>(o).ok())
                    .and_then(|v| v.get("until_ms").and_then(serde_json::Value::as_u64));
                (a.step.clone(), until)
            })
            .collect()
    }

    /// The completed steps with the fingerprints recorded with them: what a resume checks
    /// against the current graph ([`crate::fingerprint::Fingerprints::check`]).
    pub fn completed_prints(&self) -> Vec<(&str, Option<StepPrint>)> {
        let done = self.completed_steps();
        self.timeline
            .iter()
            .filter(|a| a.status == "succeeded" && done.iter().any(|(s, _)| *s == a.step))
            .map(|a| (a.step.as_str(), a.fingerprint))
            .collect()
    }
}

/// Filters for [`RunStore::list_runs`].
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only this status.
    pub status: Option<RunStatus>,
    /// Only runs created before this run id (for pagination: pass the last id of a page).
    pub before: Option<RunId>,
    /// At most this many (newest first).
    pub limit: usize,
    /// Only runs whose id starts with this (hex), or whose idempotency key, input or error
    /// contains it.
    pub search: Option<String>,
}

impl RunFilter {
    /// For stores that speak SQL: the ` AND ...` conditions of the workflow, status and
    /// `before` filters, with their arguments in order; `mark` is the placeholder's sign (`?`
    /// for SQLite, `$` for PostgreSQL), numbered from 1.
    pub fn sql_conditions(&self, mark: char) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut args: Vec<String> = Vec::new();
        let mut add = |condition: &str, arg: String| {
            args.push(arg);
            sql.push_str(&format!(" AND {condition} = {mark}{}", args.len()));
        };
        if let Some(w) = &self.workflow {
            add("workflow", w.clone());
        }
        if let Some(s) = self.status {
            // Written as a literal (a status's name, never the caller's text), with the
            // condition of the journals' index of the runs that have not succeeded: SQLite uses
            // a partial index only when the query states its condition.
            sql.push_str(&format!(" AND status = '{}'", s.as_str()));
            if s != RunStatus::Succeeded {
                sql.push_str(" AND status <> 'succeeded'");
            }
        }
        if let Some(b) = self.before {
            args.push(b.to_string());
            sql.push_str(&format!(" AND id < {mark}{}", args.len()));
        }
        (sql, args)
    }
}

/// How long finished runs are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Finished runs older than this are pruned.
    pub max_age: std::time::Duration,
    /// At most this many finished runs are kept (the oldest go first).
    pub max_runs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: std::time::Duration::from_secs(7 * 24 * 3600),
            max_runs: 1_000_000,
        }
    }
}

/// The attempt number of a wait's record (a `signal` or `sleep` step reached, holding when it
/// ends by itself): recorded with the status `waiting`, never counted as the step's value.
pub const WAIT_ATTEMPT: u32 = 0;

/// A step result to record.
#[derive(Debug, Clone)]
pub struct StepWrite {
    /// The run.
    pub run_id: RunId,
    /// The step's scoped name (`score[17]`, `payment_flow/charge`).
    pub step: std::borrow::Cow<'static, str>,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The output (JSON), or the node's error as JSON.
    pub outcome: Result<Bytes, serde_json::Value>,
    /// Start, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// A stateful node's new state for its key, written in the same transaction.
    pub state: Option<(&'static str, String, Bytes)>,
    /// The step's fingerprints in the graph running it.
    pub fingerprint: Option<StepPrint>,
}

/// The finish of a run.
#[derive(Debug, Clone)]
pub struct FinishWrite {
    /// The run.
    pub run_id: RunId,
    /// Its output, or its client-safe error.
    pub outcome: Result<Bytes, RunError>,
    /// Runs started by this one's success (`#[trigger(after = ...)]`), recorded with it.
    pub chained: Vec<NewRun>,
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Writes (or reads) fail for now: a full disk, an I/O error, a lost connection. Transient:
    /// [`RunStore::health`] reports when writes succeed again.
    #[error("{0}")]
    Unavailable(String),
    /// The store cannot be used: not a journal, corrupt, or written by a newer version.
    #[error("{0}")]
    Unusable(String),
    /// The store's worker stopped (the runner is shutting down).
    #[error("the journal's writer stopped")]
    Closed,
    /// The run's creation, sent with its first record, claims an idempotency key another run
    /// holds: nothing of the write was applied (see the contract's claims).
    #[error("the idempotency key belongs to run {0}")]
    KeyTaken(RunId),
}

impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        crate::error::Error::Journal(e.to_string())
    }
}

/// The runs of a shared store nobody is executing, for `GET /metrics` ([`RunStore::backlog`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Running runs whose owner's lease lapsed (or that have no owner): waiting for a runner.
    pub unclaimed: u64,
    /// How long the oldest of them has existed.
    pub oldest_age: std::time::Duration,
    /// Runs this runner took over from others since it started.
    pub takeovers: u64,
}

/// The next number of the order in which this process writes step records. A run's timeline is
/// ordered by start time, in milliseconds, then by this: steps that started within the same
/// millisecond (one that finished and the next, in a fast run) come back in the order they
/// ran, not in name order. Only its order within one process matters: steps that started in
/// the same millisecond were written by one runner.
pub(crate) fn next_step_seq() -> i64 {
    static SEQ: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);
    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The URL with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

/// A boxed future of a store operation.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The pending commit of a record: resolves once the record is durable (or failed). Records
/// issued together share commits (group commit), so a caller may issue a record and wait for
/// it later, or never for records whose durability a later wait covers.
#[derive(Debug)]
pub struct Commit {
    rx: oneshot::Receiver<Result<(), StoreError>>,
    /// Set by [`metered::Metered`]: when the write was issued, and where its latency goes.
    meter: Option<(
        std::time::Instant,
        std::sync::Arc<crate::stats::JournalMetrics>,
    )>,
}

impl Commit {
    /// A commit and the sender that completes it (for store implementations).
    pub fn channel() -> (oneshot::Sender<Result<(), StoreError>>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Self { rx, meter: None })
    }

    /// This commit, measured into `metrics` when it resolves.
    pub(crate) fn metered(mut self, metrics: std::sync::Arc<crate::stats::JournalMetrics>) -> Self {
        self.meter = Some((std::time::Instant::now(), metrics));
        self
    }

    /// A commit that is already done.
    pub fn done(result: Result<(), StoreError>) -> Self {
        let (tx, commit) = Self::channel();
        let _ = tx.send(result);
        commit
    }
}

impl Future for Commit {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r.unwrap_or(Err(StoreError::Closed)),
        };
        if let Some((issued, metrics)) = self.meter.take() {
            match &result {
                Ok(()) => metrics.commit.observe(issued.elapsed()),
                Err(_) => metrics.failed_writes.inc(),
            }
        }
        Poll::Ready(result)
    }
}

/// For writes split into several: a claim (a keyed creation) goes with each of them, so that
/// none is applied if the key is another run's; an unkeyed creation goes with the first.
fn claim_or_take(create: &mut Option<NewRun>) -> Option<NewRun> {
    match create {
        Some(run) if run.idempotency_key.is_some() => Some(run.clone()),
        _ => create.take(),
    }
}

/// Where runs are recorded. Implementations: [`sqlite::SqliteStore`], [`memory::MemoryStore`];
/// every one passes [`conformance::check`].
pub trait RunStore: Send + Sync + std::fmt::Debug + 'static {
    /// Records a new run (durably before it resolves), or finds the run that holds its
    /// workflow and idempotency key.
    fn create_run(&self, run: NewRun) -> StoreFuture<'_, Created>;

    /// Records one attempt of one step (with the run's creation first, when given, and the
    /// node's state, atomically). Resolves when durable. A keyed creation is a claim: see the
    /// contract.
    fn record_step(&self, write: StepWrite, create: Option<NewRun>) -> Commit;

    /// Records a run's end (with its creation first, when given, and the runs it chains,
    /// atomically). Resolves when durable.
    fn finish(&self, write: FinishWrite, create: Option<NewRun>) -> Commit;

    /// Records several attempts in order (after the run's creation, when given); resolves when
    /// all are durable. A store that can should write them in one transaction, so that they
    /// cost one commit; the default records them one by one. An empty list records nothing.
    fn record_steps(&self, mut writes: Vec<StepWrite>, create: Option<NewRun>) -> Commit {
        let Some(last) = writes.pop() else {
            return Commit::done(Ok(()));
        };
        let mut create = create;
        for write in writes {
            drop(self.record_step(write, claim_or_take(&mut create)));
        }
        self.record_step(last, create)
    }

    /// [`RunStore::finish`], with the attempts recorded just before it (the last step's, and
    /// those of pure steps). A store that can writes them all in one transaction; the default
    /// records the steps, then the end.
    fn finish_with_steps(
        &self,
        steps: Vec<StepWrite>,
        write: FinishWrite,
        create: Option<NewRun>,
    ) -> Commit {
        let mut create = create;
        for step in steps {
            drop(self.record_step(step, claim_or_take(&mut create)));
        }
        self.finish(write, create)
    }

    /// Marks a failed or blocked run as running again (for a re-drive, which resumes after
    /// its completed steps); `false` when there is no such run.
    fn reopen(&self, run_id: RunId) -> StoreFuture<'_, bool>;

    /// Marks a failed or blocked run as running again with none of its step records (a retry
    /// from the start, `runs retry --from-start`), now started by the graph of `fingerprint`;
    /// `false` when there is no such run. Atomic: the records go only if the run reopens.
    fn reset(&self, run_id: RunId, fingerprint: Option<Fingerprint>) -> StoreFuture<'_, bool>;

    /// Records `run`, forked from run `from`, with the step records it reuses (copies of
    /// `from`'s), atomically and durably: the fork exists with all of them or not at all.
    fn fork(&self, run: NewRun, from: RunId, steps: Vec<StepWrite>) -> StoreFuture<'_, ()>;

    /// Deletes finished runs beyond `retention` (never a running or blocked one); returns how
    /// many.
    fn prune(&self, retention: Retention) -> StoreFuture<'_, u64>;

    /// A run with its timeline (every attempt of every step, in order).
    fn get_run(&self, run_id: RunId) -> StoreFuture<'_, Option<RunRecord>>;

    /// Runs matching `filter`, newest first, without timelines.
    fn list_runs(&self, filter: RunFilter) -> StoreFuture<'_, Vec<RunRecord>>;

    /// Every running run with its timeline, oldest first: what a restart resumes.
    fn unfinished_runs(&self) -> StoreFuture<'_, Vec<RunRecord>>;

    /// The runs that hold any of `keys` (idempotency keys of `workflow`), as `(key, run)`: a
    /// read, to drop most duplicates before they start (a queue trigger looks up each pull
    /// batch's message keys); a claim still decides. The default knows none.
    fn find_keys(
        &self,
        workflow: &'static str,
        keys: Vec<String>,
    ) -> StoreFuture<'_, Vec<(String, RunId)>> {
        let _ = (workflow, keys);
        Box::pin(async { Ok(Vec::new()) })
    }

    /// A stateful node's value for `key`.
    fn get_state(&self, node: &'static str, key: String) -> StoreFuture<'_, Option<Bytes>>;

    /// `Err` while writes fail; `Ok` once one succeeds again.
    fn health(&self) -> Result<(), StoreError>;

    /// Whether what it records survives the process (a file or a database, not memory).
    fn durable(&self) -> bool;

    /// Whether several runners share this store (PostgreSQL). Then each runner owns the runs it
    /// executes under a lease with a fencing epoch: a restart does not resume every unfinished
    /// run (others may be executing them) but claims the runs of runners whose lease lapsed
    /// ([`RunStore::claim_orphans`]), and a write of a run another runner took over fails.
    fn shared(&self) -> bool {
        false
    }

    /// Takes over up to `limit` running runs whose owner's lease lapsed: they become this
    /// runner's under a new fencing epoch (the old owner cannot write them any more) and are
    /// returned with their timelines, oldest first, to be resumed. Stores not shared have no
    /// other owner: nothing to claim.
    fn claim_orphans(&self, limit: usize) -> StoreFuture<'_, Vec<RunRecord>> {
        let _ = limit;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Whether this runner may execute `run_id` (it created, claimed or reopened it and no
    /// other runner took it over since). Always true for a store that is not shared.
    fn owns(&self, run_id: RunId) -> bool {
        let _ = run_id;
        true
    }

    /// The shared backlog (`None` for a store that is not shared).
    fn backlog(&self) -> StoreFuture<'_, Option<Backlog>> {
        Box::pin(async { Ok(None) })
    }

    /// Waits until this runner holds the key `key` of stateful node `node` among all the
    /// runners sharing the store (the runner's own per-key lock serializes its runs). A step
    /// record carrying the key's new state releases it in the same transaction; a step that
    /// ends without one releases it with [`RunStore::unlock_key`]. A runner whose lease lapses
    /// loses its keys. Nothing to wait for in a store that is not shared.
    fn lock_key(&self, node: &'static str, key: String) -> StoreFuture<'_, ()> {
        let _ = (node, key);
        Box::pin(async { Ok(()) })
    }

    /// Releases a key [`RunStore::lock_key`] took, when no state record did.
    fn unlock_key(&self, node: &'static str, key: String) -> StoreFuture<'_, ()> {
        let _ = (node, key);
        Box::pin(async { Ok(()) })
    }

    /// Records a signal's value (or a signal's timeout) as step `write.step`'s outcome unless
    /// the step has one already, atomically: of a signal and a timeout racing, one wins. A
    /// waiting run is woken (running again, owned by this runner). Durable when it resolves.
    fn deliver(&self, write: StepWrite) -> StoreFuture<'_, Delivery>;

    /// Marks a running run `waiting` at `step` until `due_ms` (`None`: until a signal), unless
    /// `step` has its value already (a signal delivered while the run got there): then it
    /// stays running and this returns `false`, and the caller resumes it.
    fn suspend(&self, run_id: RunId, step: String, due_ms: Option<u64>) -> StoreFuture<'_, bool>;

    /// Takes up to `limit` waiting runs due by `now_ms`: they are running again (owned by this
    /// runner) and returned with their timelines, to resume.
    fn wake_due(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<RunRecord>>;

    /// Starts the queued runs of `workflow` that `spec` lets start now, in order (higher
    /// priority first, then arrival), per key; a key's first run that must wait holds back the
    /// key's later ones. They are running (owned by this runner, started at `now_ms`) and
    /// returned, at most `limit`. Atomic across runners.
    fn start_queued(
        &self,
        workflow: &'static str,
        spec: QueueSpec,
        now_ms: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<RunRecord>>;

    /// Ends the queued runs of `workflow` and `key` other than `keep` as `cancelled` with the
    /// error `debounced` (a newer run replaces them); returns them.
    fn supersede(
        &self,
        workflow: &'static str,
        key: String,
        keep: RunId,
    ) -> StoreFuture<'_, Vec<RunId>>;

    /// Cancels a run: see [`Cancel`] for what happens in each state.
    fn cancel(&self, run_id: RunId) -> StoreFuture<'_, Cancel>;

    /// Transactions the store has committed since it opened (each a write to the disk or a
    /// round trip to the database): divided by runs, what one run costs. `0` when the store
    /// does not count them (memory).
    fn transactions(&self) -> u64 {
        0
    }

    /// How many times the store flushed its commits to the disk itself (`fdatasync`), and how
    /// long those flushes took in all: the disk's share of each commit. `(0, 0)` when the
    /// store does not sync a file of its own (memory; PostgreSQL, whose server syncs).
    fn syncs(&self) -> (u64, std::time::Duration) {
        (0, std::time::Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("postgres://app:s3cret@127.0.0.1:5432/shop"),
            "postgres://app:***@127.0.0.1:5432/shop"
        );
        assert_eq!(
            redact_url("postgresql://app:p@ss@db/x?sslmode=disable"),
            "postgresql://app:***@db/x?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://app@127.0.0.1/shop"),
            "postgres://app@127.0.0.1/shop"
        );
        assert_eq!(redact_url("postgres://db"), "postgres://db");
    }
}
