//! The PostgreSQL journal: several runners share one database (issue 12).
//!
//! - **Group commit.** Writes issued together (steps, finishes, creations from every run of
//!   this runner) are applied in one transaction by one writer connection, as the SQLite store
//!   does; `nanoflow_journal_commit_seconds_count` counts the transactions.
//! - **Ownership.** Each runner holds a lease (`runners.lease_until`, in the database's clock)
//!   renewed by a heartbeat; each run it executes carries its owner and a fencing epoch
//!   (`runs.owner`, `runs.epoch`). A write of a step or an end checks, in its transaction,
//!   that the run still has this owner and epoch (`FOR NO KEY UPDATE`, which also keeps a
//!   claimer away until it commits): a runner whose runs were taken over cannot write, and
//!   drops them.
//! - **Takeover.** [`RunStore::claim_orphans`] moves the running runs of runners whose lease
//!   lapsed to this runner under a new epoch (`FOR UPDATE SKIP LOCKED`); the ingress polls it
//!   (`ingress/lease.rs`) and resumes each after its last completed step.
//!
//! All database work happens on the store's own thread (one tokio runtime, like the SQLite
//! writer thread), so opening is synchronous and the runner's runtime never blocks on it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::redact_url;
use super::{
    Attempt, Backlog, Cancel, Commit, Created, Delivery, FinishWrite, NewRun, QueueSpec, Retention,
    RunFilter, RunRecord, RunStore, StepWrite, StoreError, StoreFuture,
};
use crate::fingerprint::{Fingerprint, StepPrint};
use crate::id::RunId;
use crate::runs::{now_ms, RunStatus};

/// The schema version this build writes (`nanoflow_journal.meta`).
const SCHEMA_VERSION: i64 = 5;

/// Columns schema 2 added (issue 13: fingerprints, forks); older journals gain them empty.
const MIGRATE_TO_2: &str = "
ALTER TABLE nanoflow_journal.runs ADD COLUMN IF NOT EXISTS fingerprint bigint;
ALTER TABLE nanoflow_journal.runs ADD COLUMN IF NOT EXISTS forked_from text;
ALTER TABLE nanoflow_journal.steps ADD COLUMN IF NOT EXISTS output_fp bigint;
ALTER TABLE nanoflow_journal.steps ADD COLUMN IF NOT EXISTS place_fp bigint;
";

/// Columns schema 3 added (issue 15: flow control): a queued run's limit key, priority and
/// start time, and when a waiting or queued run is due.
const MIGRATE_TO_3: &str = "
ALTER TABLE nanoflow_journal.runs ADD COLUMN IF NOT EXISTS limit_key text;
ALTER TABLE nanoflow_journal.runs ADD COLUMN IF NOT EXISTS priority bigint NOT NULL DEFAULT 0;
ALTER TABLE nanoflow_journal.runs ADD COLUMN IF NOT EXISTS due_ms bigint;
ALTER TABLE nanoflow_journal.runs ADD COLUMN IF NOT EXISTS started_ms bigint;
CREATE INDEX IF NOT EXISTS runs_due ON nanoflow_journal.runs (status, due_ms)
    WHERE due_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_limited ON nanoflow_journal.runs (workflow, limit_key, status)
    WHERE limit_key IS NOT NULL;
";

/// Schema 4: the order in which step records were written, what orders a run's timeline among
/// steps that started within the same millisecond. Older records have none.
const MIGRATE_TO_4: &str = "
ALTER TABLE nanoflow_journal.steps ADD COLUMN IF NOT EXISTS seq bigint;
";

/// Schema 5: runs are found by status through an index of the runs that have not succeeded,
/// which a run's end leaves (issue 12): an index of every run by status took an entry for each
/// run's creation and another for its end, the most written index of the journal. Succeeded
/// runs, most of a journal, are listed newest first from the primary key (a list asks for a
/// page of them, which the newest rows fill); the statuses that are rarer keep their index.
const MIGRATE_TO_5: &str = "
DROP INDEX IF EXISTS nanoflow_journal.runs_status;
CREATE INDEX IF NOT EXISTS runs_not_succeeded ON nanoflow_journal.runs (status, id)
    WHERE status <> 'succeeded';
";

/// Serializes the flow-control decisions of one workflow across runners (xor the workflow's
/// hash).
const FLOW_LOCK: i64 = 0x666c_6f77_0000_0000;

/// Writer connections, each committing its own batches; a run's writes all go to one writer
/// (by its id), which keeps them in order. One: with two, each batch held half the runs and
/// throughput fell (0.39x the SQLite journal against 0.42x to 0.44x with one, docs/benchmarks.md):
/// a batch costs a round trip and one statement whatever its size.
const WRITERS: usize = 1;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Serializes schema installation across runners starting together (an arbitrary constant).
const SCHEMA_LOCK: i64 = 0x6e61_6e6f_666c_6f77;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS nanoflow_journal.runs (
    id text PRIMARY KEY,
    workflow text NOT NULL,
    status text NOT NULL,
    input bytea NOT NULL,
    output bytea,
    error text,
    idempotency_key text,
    created_ms bigint NOT NULL,
    finished_ms bigint,
    owner text,
    epoch bigint NOT NULL DEFAULT 1,
    fingerprint bigint,
    forked_from text
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_idempotency
    ON nanoflow_journal.runs (workflow, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_workflow ON nanoflow_journal.runs (workflow, id);
CREATE INDEX IF NOT EXISTS runs_running_owner
    ON nanoflow_journal.runs (owner, id) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS nanoflow_journal.steps (
    run_id text NOT NULL,
    step text NOT NULL,
    attempt integer NOT NULL,
    status text NOT NULL,
    output bytea,
    error text,
    started_ms bigint NOT NULL,
    duration_us bigint NOT NULL,
    output_fp bigint,
    place_fp bigint,
    PRIMARY KEY (run_id, step, attempt)
);
CREATE TABLE IF NOT EXISTS nanoflow_journal.state (
    node text NOT NULL,
    key text NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (node, key)
);
CREATE TABLE IF NOT EXISTS nanoflow_journal.state_locks (
    node text NOT NULL,
    key text NOT NULL,
    owner text NOT NULL,
    PRIMARY KEY (node, key)
);
CREATE TABLE IF NOT EXISTS nanoflow_journal.runners (
    owner text PRIMARY KEY,
    runner_id text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_until timestamptz NOT NULL
);
";

const RUN_COLUMNS: &str = "id, workflow, status, input, output, error, idempotency_key, created_ms, finished_ms, fingerprint, forked_from, due_ms";

/// Who this runner is and how long its lease lasts.
#[derive(Debug, Clone)]
pub struct Ownership {
    /// The runner's id (`NANOFLOW_RUNNER_ID`), shown in logs and in the `runners` table.
    pub runner_id: String,
    /// How long a lease lasts without a heartbeat: after it, other runners take this runner's
    /// unfinished runs over. Renewed every third of it.
    pub lease: Duration,
}

impl Default for Ownership {
    fn default() -> Self {
        Self {
            runner_id: default_runner_id(),
            lease: Duration::from_secs(10),
        }
    }
}

/// `host-pid-random`: unique per process, readable in logs.
pub fn default_runner_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "runner".to_owned());
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        crate::id::random_u64() & 0xff_ffff
    )
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Write {
    Create(NewRun, Reply<Created>),
    /// Attempts of one run, in order, in one transaction.
    Step(Vec<StepWrite>, Option<NewRun>, Reply<()>),
    /// A run's end, after the attempts written with it.
    Finish(Vec<StepWrite>, FinishWrite, Option<NewRun>, Reply<()>),
    Reopen(RunId, Reply<bool>),
    Reset(RunId, Option<Fingerprint>, Reply<bool>),
    Fork(NewRun, RunId, Vec<StepWrite>, Reply<()>),
    Prune(Retention, Reply<u64>),
}

impl Write {
    /// The run whose ownership this write needs (steps and ends of runs created earlier).
    fn fenced_run(&self) -> Option<RunId> {
        match self {
            Write::Step(s, None, _) => s.first().map(|s| s.run_id),
            Write::Finish(_, f, None, _) => Some(f.run_id),
            _ => None,
        }
    }

    /// Whether this write rewrites a row in the normal course: a wait's record (attempt
    /// [`super::WAIT_ATTEMPT`]), replaced when the wait ends.
    fn rewrites(&self) -> bool {
        match self {
            Write::Step(steps, _, _) | Write::Finish(steps, _, _, _) => {
                steps.iter().any(|s| s.attempt == super::WAIT_ATTEMPT)
            }
            _ => false,
        }
    }

    fn fail(self, e: StoreError) {
        match self {
            Write::Create(_, tx) => drop(tx.send(Err(e))),
            Write::Step(_, _, tx) | Write::Finish(_, _, _, tx) => drop(tx.send(Err(e))),
            Write::Reopen(_, tx) | Write::Reset(_, _, tx) => drop(tx.send(Err(e))),
            Write::Fork(_, _, _, tx) => drop(tx.send(Err(e))),
            Write::Prune(_, tx) => drop(tx.send(Err(e))),
        }
    }
}

/// A read, run on the store's thread with a reader connection.
type Job = Box<dyn FnOnce(Arc<Readers>) -> BoxFuture<'static, ()> + Send>;

/// What the store's thread is asked to do.
enum Request {
    Read(Job),
    Claim(usize, Reply<Vec<RunRecord>>),
}

/// Whether the journal can write: set after each transaction.
#[derive(Debug, Default)]
struct Health {
    failing: AtomicBool,
    reason: Mutex<String>,
}

impl Health {
    fn failed(&self, reason: &str) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_owned();
        if !self.failing.swap(true, Ordering::SeqCst) {
            tracing::warn!(error = reason, "the PostgreSQL journal cannot write");
        }
    }

    fn succeeded(&self, url: &str) {
        if self.failing.swap(false, Ordering::SeqCst) {
            tracing::info!(journal = url, "journal writes succeed again");
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable(
                self.reason
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ))
        } else {
            Ok(())
        }
    }
}

/// State shared by the store's handle and its thread.
#[derive(Debug)]
struct Shared {
    /// The URL, password hidden.
    shown: String,
    url: String,
    /// This process's lease: the runner id and a random suffix, unique per start.
    owner: String,
    ownership: Ownership,
    /// The runs this runner may write, with their fencing epochs.
    held: Mutex<HashMap<RunId, i64>>,
    health: Health,
    /// Write transactions committed (the group commits).
    transactions: AtomicU64,
    takeovers: AtomicU64,
    /// The connection of flow-control decisions (issue 15): each a transaction of its own.
    flow: tokio::sync::Mutex<Option<Client>>,
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, i64>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!("journal `{}`: {e}", self.shown))
    }
}

/// The PostgreSQL store: a journal several runners share.
#[derive(Debug)]
pub struct PostgresStore {
    shared: Arc<Shared>,
    requests: mpsc::UnboundedSender<Request>,
    /// Straight to the writer tasks (by run id): no hop on the way to a commit.
    writes: Vec<mpsc::UnboundedSender<Write>>,
}

impl PostgresStore {
    /// Connects to `url`, creates or checks the schema (refusing one written by a newer
    /// nanoflow with [`StoreError::Unusable`]), registers this runner's lease, and starts the
    /// store's thread. An unreachable database is an error naming the URL, password hidden.
    pub fn open(url: &str, ownership: Ownership) -> Result<Self, StoreError> {
        let owner = format!(
            "{}#{:08x}",
            ownership.runner_id,
            crate::id::random_u64() as u32
        );
        let shared = Arc::new(Shared {
            shown: redact_url(url),
            url: url.to_owned(),
            owner,
            ownership,
            held: Mutex::default(),
            health: Health::default(),
            transactions: AtomicU64::new(0),
            takeovers: AtomicU64::new(0),
            flow: tokio::sync::Mutex::new(None),
        });
        let (requests, rx) = mpsc::unbounded_channel();
        let (writes, writes_rx): (Vec<_>, Vec<_>) =
            (0..WRITERS).map(|_| mpsc::unbounded_channel()).unzip();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("nanoflow-postgres".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(thread_shared.error(e)));
                        return;
                    }
                };
                runtime.block_on(run(thread_shared, rx, writes_rx, ready_tx));
            })
            .map_err(|e| shared.error(format!("cannot start the journal thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| shared.error("the journal thread stopped"))??;
        tracing::info!(journal = %shared.shown, runner_id = %shared.ownership.runner_id, lease = ?shared.ownership.lease, "PostgreSQL journal open");
        Ok(Self {
            shared,
            requests,
            writes,
        })
    }

    /// This runner's id.
    pub fn runner_id(&self) -> &str {
        &self.shared.ownership.runner_id
    }

    fn send(&self, request: Request) {
        // If the thread is gone, the reply sender drops with the request: `Closed`.
        let _ = self.requests.send(request);
    }

    /// The writer of `run_id`'s records.
    fn writer(&self, run_id: RunId) -> &mpsc::UnboundedSender<Write> {
        &self.writes[(run_id.as_u128() % self.writes.len() as u128) as usize]
    }

    /// A record that claims its run's idempotency key (the run's keyed creation travels with
    /// it): the creation is written first, as `create_run` writes it, and the record once the
    /// key is known to be this run's (two round trips, as a claim before the run starts costs).
    /// Sent with a later record of the same run, the creation finds the run and the key its own.
    fn claim_then(
        &self,
        run: NewRun,
        record: impl FnOnce(oneshot::Sender<Result<(), StoreError>>) -> Write + Send + 'static,
        done: oneshot::Sender<Result<(), StoreError>>,
    ) {
        let run_id = run.run_id;
        let writer = self.writer(run_id).clone();
        let (tx, created) = oneshot::channel();
        // Sent now, so that it is ahead of the run's later writes.
        let _ = writer.send(Write::Create(run, tx));
        tokio::spawn(async move {
            match created.await.unwrap_or(Err(StoreError::Closed)) {
                Ok(Created::Existing(holder)) if holder != run_id => {
                    let _ = done.send(Err(StoreError::KeyTaken(holder)));
                }
                Ok(_) => {
                    let _ = writer.send(record(done));
                }
                Err(e) => {
                    let _ = done.send(Err(e));
                }
            }
        });
    }

    fn write<T: Send + 'static>(
        &self,
        run_id: Option<RunId>,
        make: impl FnOnce(Reply<T>) -> Write,
    ) -> StoreFuture<'_, T> {
        let (tx, rx) = oneshot::channel();
        let writer = run_id.map_or(&self.writes[0], |id| self.writer(id));
        // If the writer is gone, the reply sender drops with the write: `Closed`.
        let _ = writer.send(make(tx));
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Closed)) })
    }

    fn read<T, F>(&self, read: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Client, &'c Shared) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let shared = self.shared.clone();
        let job: Job = Box::new(move |readers| {
            Box::pin(async move {
                let result = match readers.client(&shared).await {
                    Ok(client) => read(&client, &shared).await,
                    Err(e) => Err(e),
                };
                let _ = tx.send(result);
            })
        });
        self.send(Request::Read(job));
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Closed)) })
    }
}

/// A flow-control decision, run in one transaction on the flow connection.
type FlowJob<T> = for<'c> fn(
    &'c tokio_postgres::Transaction<'c>,
    &'c Shared,
    FlowArgs,
) -> BoxFuture<'c, Result<T, tokio_postgres::Error>>;

/// The arguments of a [`FlowJob`].
struct FlowArgs {
    run_id: Option<RunId>,
    workflow: &'static str,
    text: String,
    due: Option<u64>,
    spec: QueueSpec,
    limit: usize,
    write: Option<StepWrite>,
}

impl FlowArgs {
    fn new() -> Self {
        Self {
            run_id: None,
            workflow: "",
            text: String::new(),
            due: None,
            spec: QueueSpec::default(),
            limit: 0,
            write: None,
        }
    }
}

impl PostgresStore {
    /// Runs `job` in a transaction of its own on the flow connection (on the store's thread).
    fn flow<T: Send + 'static>(&self, args: FlowArgs, job: FlowJob<T>) -> StoreFuture<'_, T> {
        self.read(move |_, shared| {
            Box::pin(async move {
                let mut slot = shared.flow.lock().await;
                if slot.as_ref().is_none_or(|c| c.is_closed()) {
                    *slot = Some(connect(shared).await?);
                }
                let client = slot.as_mut().expect("connected above");
                let tx = client.transaction().await.map_err(|e| shared.error(e))?;
                let out = job(&tx, shared, args).await.map_err(|e| shared.error(e))?;
                tx.commit().await.map_err(|e| shared.error(e))?;
                shared.transactions.fetch_add(1, Ordering::Relaxed);
                Ok(out)
            })
        })
    }

    /// The runs `ids` (now running, owned here under `epochs`) with their timelines.
    async fn owned_runs(&self, taken: Vec<(RunId, i64)>) -> Result<Vec<RunRecord>, StoreError> {
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        {
            let mut held = self.shared.held();
            for (id, epoch) in &taken {
                held.insert(*id, *epoch);
            }
        }
        let ids: Vec<String> = taken.iter().map(|(id, _)| id.to_string()).collect();
        let order: Vec<RunId> = taken.iter().map(|(id, _)| *id).collect();
        let mut runs = self
            .read(move |c, s| {
                Box::pin(async move {
                    let rows = c
                        .query(
                            &*format!(
                                "SELECT {RUN_COLUMNS} FROM nanoflow_journal.runs WHERE id = ANY($1)"
                            ),
                            &[&ids],
                        )
                        .await
                        .map_err(|e| s.error(e))?;
                    with_timelines(c, s, rows).await
                })
            })
            .await?;
        runs.sort_by_key(|r| order.iter().position(|id| *id == r.run_id));
        Ok(runs)
    }
}

/// The status of run `id`, locked until the transaction ends.
async fn lock_status(
    tx: &tokio_postgres::Transaction<'_>,
    id: &str,
) -> Result<Option<RunStatus>, tokio_postgres::Error> {
    Ok(tx
        .query_opt(
            "SELECT status FROM nanoflow_journal.runs WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .map(|r| parse_status(&r.get::<_, String>(0))))
}

/// Makes run `id` this runner's and running again; its new epoch.
async fn take(
    tx: &tokio_postgres::Transaction<'_>,
    shared: &Shared,
    id: &str,
) -> Result<i64, tokio_postgres::Error> {
    Ok(tx
        .query_one(
            "UPDATE nanoflow_journal.runs SET status = 'running', due_ms = NULL, owner = $2,
                 epoch = epoch + 1 WHERE id = $1 RETURNING epoch",
            &[&id, &shared.owner],
        )
        .await?
        .get(0))
}

async fn end_cancelled(
    tx: &tokio_postgres::Transaction<'_>,
    id: &str,
    error: &crate::runs::RunError,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE nanoflow_journal.runs SET status = 'cancelled', error = $2, finished_ms = $3,
             due_ms = NULL WHERE id = $1",
        &[&id, &serde_json::to_string(error).ok(), &(now_ms() as i64)],
    )
    .await?;
    Ok(())
}

/// What a flow decision found: a delivery or cancellation outcome, and a run taken over.
enum Flowed {
    Delivery(Delivery),
    Cancel(Cancel),
    Bool(bool),
    Taken(Vec<(RunId, i64)>),
    Ids(Vec<RunId>),
}

fn deliver_job<'c>(
    tx: &'c tokio_postgres::Transaction<'c>,
    shared: &'c Shared,
    args: FlowArgs,
) -> BoxFuture<'c, Result<Flowed, tokio_postgres::Error>> {
    Box::pin(async move {
        let write = args.write.expect("a write to deliver");
        let id = write.run_id.to_string();
        let status = match lock_status(tx, &id).await? {
            None => return Ok(Flowed::Delivery(Delivery::UnknownRun)),
            Some(s) if s.is_finished() || s == RunStatus::Blocked => {
                return Ok(Flowed::Delivery(Delivery::Finished(s)))
            }
            Some(s) => s,
        };
        let output = write.outcome.as_ref().ok().map(|b| b.to_vec());
        let inserted = tx
            .execute(
                "INSERT INTO nanoflow_journal.steps
                     (run_id, step, attempt, status, output, started_ms, duration_us, seq)
                 SELECT $1, $2, $3, 'succeeded', $4, $5, 0, $6
                 WHERE NOT EXISTS (SELECT 1 FROM nanoflow_journal.steps
                                   WHERE run_id = $1 AND step = $2 AND status = 'succeeded')
                 ON CONFLICT (run_id, step, attempt) DO NOTHING",
                &[
                    &id,
                    &write.step.to_string(),
                    &(write.attempt as i32),
                    &output,
                    &(write.started_ms as i64),
                    &super::next_step_seq(),
                ],
            )
            .await?;
        if inserted == 0 {
            return Ok(Flowed::Delivery(Delivery::AlreadyDelivered));
        }
        if status == RunStatus::Waiting {
            let epoch = take(tx, shared, &id).await?;
            return Ok(Flowed::Taken(vec![(write.run_id, epoch)]));
        }
        Ok(Flowed::Delivery(Delivery::Kept))
    })
}

fn suspend_job<'c>(
    tx: &'c tokio_postgres::Transaction<'c>,
    shared: &'c Shared,
    args: FlowArgs,
) -> BoxFuture<'c, Result<Flowed, tokio_postgres::Error>> {
    Box::pin(async move {
        let run_id = args.run_id.expect("a run");
        let id = run_id.to_string();
        if lock_status(tx, &id).await? != Some(RunStatus::Running) {
            return Ok(Flowed::Bool(false));
        }
        // Read after the lock: a delivery that committed first is seen.
        let delivered = tx
            .query_opt(
                "SELECT 1 FROM nanoflow_journal.steps
                 WHERE run_id = $1 AND step = $2 AND status = 'succeeded' LIMIT 1",
                &[&id, &args.text],
            )
            .await?
            .is_some();
        if delivered {
            return Ok(Flowed::Bool(false));
        }
        let n = tx
            .execute(
                "UPDATE nanoflow_journal.runs SET status = 'waiting', due_ms = $2
                 WHERE id = $1 AND owner = $3",
                &[&id, &args.due.map(|d| d as i64), &shared.owner],
            )
            .await?;
        if n == 1 {
            shared.held().remove(&run_id);
        }
        Ok(Flowed::Bool(n == 1))
    })
}

fn wake_job<'c>(
    tx: &'c tokio_postgres::Transaction<'c>,
    shared: &'c Shared,
    args: FlowArgs,
) -> BoxFuture<'c, Result<Flowed, tokio_postgres::Error>> {
    Box::pin(async move {
        let rows = tx
            .query(
                "UPDATE nanoflow_journal.runs SET status = 'running', due_ms = NULL, owner = $3,
                     epoch = epoch + 1
                 WHERE id IN (SELECT id FROM nanoflow_journal.runs
                              WHERE status = 'waiting' AND due_ms <= $1
                              ORDER BY due_ms LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING id, epoch",
                &[
                    &(args.due.unwrap_or(0) as i64),
                    &(args.limit as i64),
                    &shared.owner,
                ],
            )
            .await?;
        Ok(Flowed::Taken(
            rows.iter()
                .filter_map(|r| Some((r.get::<_, String>(0).parse().ok()?, r.get(1))))
                .collect(),
        ))
    })
}

/// A key for `pg_advisory_xact_lock` from a workflow's name.
fn flow_lock(workflow: &str) -> i64 {
    let mut h: i64 = 0;
    for b in workflow.bytes() {
        h = h.wrapping_mul(31).wrapping_add(b as i64);
    }
    FLOW_LOCK ^ (h & 0xffff_ffff)
}

fn start_queued_job<'c>(
    tx: &'c tokio_postgres::Transaction<'c>,
    shared: &'c Shared,
    args: FlowArgs,
) -> BoxFuture<'c, Result<Flowed, tokio_postgres::Error>> {
    Box::pin(async move {
        let workflow = args.workflow;
        let now = args.due.unwrap_or(0) as i64;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&flow_lock(workflow)])
            .await?;
        let queued = tx
            .query(
                "SELECT id, limit_key, due_ms FROM nanoflow_journal.runs
                 WHERE workflow = $1 AND status = 'queued'
                 ORDER BY priority DESC, id LIMIT 10000",
                &[&workflow],
            )
            .await?;
        let since = args
            .spec
            .rate
            .map_or(i64::MAX, |(_, per)| now.saturating_sub(per as i64));
        let counts = tx
            .query(
                "SELECT limit_key,
                        count(*) FILTER (WHERE status IN ('running', 'waiting')),
                        count(*) FILTER (WHERE started_ms > $2)
                 FROM nanoflow_journal.runs
                 WHERE workflow = $1 AND limit_key IS NOT NULL
                   AND (status IN ('running', 'waiting') OR started_ms > $2)
                 GROUP BY limit_key",
                &[&workflow, &since],
            )
            .await?;
        let counts: HashMap<String, (u64, u64)> = counts
            .iter()
            .map(|r| {
                let (busy, recent): (i64, i64) = (r.get(1), r.get(2));
                (r.get::<_, String>(0), (busy as u64, recent as u64))
            })
            .collect();
        let queued = queued
            .iter()
            .filter_map(|row| {
                let id: String = row.get(0);
                let due: Option<i64> = row.get(2);
                Some((
                    id.parse().ok()?,
                    row.get::<_, String>(1),
                    due.map(|d| d as u64),
                ))
            })
            .collect();
        let chosen = super::runs_to_start(queued, counts, args.spec, now as u64, args.limit);
        let mut started = Vec::with_capacity(chosen.len());
        for run_id in chosen {
            let epoch: i64 = tx
                .query_one(
                    "UPDATE nanoflow_journal.runs SET status = 'running', due_ms = NULL,
                         started_ms = $2, owner = $3, epoch = epoch + 1
                     WHERE id = $1 RETURNING epoch",
                    &[&run_id.to_string(), &now, &shared.owner],
                )
                .await?
                .get(0);
            started.push((run_id, epoch));
        }
        Ok(Flowed::Taken(started))
    })
}

fn supersede_job<'c>(
    tx: &'c tokio_postgres::Transaction<'c>,
    _shared: &'c Shared,
    args: FlowArgs,
) -> BoxFuture<'c, Result<Flowed, tokio_postgres::Error>> {
    Box::pin(async move {
        let keep = args.run_id.expect("the run kept");
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&flow_lock(args.workflow)],
        )
        .await?;
        let rows = tx
            .query(
                "SELECT id FROM nanoflow_journal.runs
                 WHERE workflow = $1 AND limit_key = $2 AND status = 'queued' AND id <> $3",
                &[&args.workflow, &args.text, &keep.to_string()],
            )
            .await?;
        let error = crate::runs::RunError::debounced(keep);
        let mut ids = Vec::new();
        for row in &rows {
            let id: String = row.get(0);
            end_cancelled(tx, &id, &error).await?;
            ids.extend(id.parse::<RunId>().ok());
        }
        Ok(Flowed::Ids(ids))
    })
}

fn cancel_job<'c>(
    tx: &'c tokio_postgres::Transaction<'c>,
    shared: &'c Shared,
    args: FlowArgs,
) -> BoxFuture<'c, Result<Flowed, tokio_postgres::Error>> {
    Box::pin(async move {
        let run_id = args.run_id.expect("a run");
        let id = run_id.to_string();
        Ok(match lock_status(tx, &id).await? {
            None => Flowed::Cancel(Cancel::UnknownRun),
            Some(s) if s.is_finished() => Flowed::Cancel(Cancel::Finished(s)),
            Some(RunStatus::Queued | RunStatus::Blocked) => {
                end_cancelled(tx, &id, &crate::runs::RunError::cancelled()).await?;
                Flowed::Cancel(Cancel::Ended)
            }
            Some(RunStatus::Waiting) => {
                let epoch = take(tx, shared, &id).await?;
                Flowed::Taken(vec![(run_id, epoch)])
            }
            Some(_) => Flowed::Cancel(Cancel::Running),
        })
    })
}

impl RunStore for PostgresStore {
    fn create_run(&self, run: NewRun) -> StoreFuture<'_, Created> {
        self.write(Some(run.run_id), |tx| Write::Create(run, tx))
    }

    fn record_step(&self, write: StepWrite, create: Option<NewRun>) -> Commit {
        self.record_steps(vec![write], create)
    }

    fn record_steps(&self, writes: Vec<StepWrite>, create: Option<NewRun>) -> Commit {
        let Some(run_id) = writes.first().map(|w| w.run_id) else {
            return Commit::done(Ok(()));
        };
        let (tx, commit) = Commit::channel();
        match create {
            Some(run) if run.idempotency_key.is_some() => {
                self.claim_then(run, move |tx| Write::Step(writes, None, tx), tx)
            }
            create => {
                let _ = self.writer(run_id).send(Write::Step(writes, create, tx));
            }
        }
        commit
    }

    fn finish(&self, write: FinishWrite, create: Option<NewRun>) -> Commit {
        self.finish_with_steps(Vec::new(), write, create)
    }

    fn finish_with_steps(
        &self,
        steps: Vec<StepWrite>,
        write: FinishWrite,
        create: Option<NewRun>,
    ) -> Commit {
        let (tx, commit) = Commit::channel();
        match create {
            Some(run) if run.idempotency_key.is_some() => {
                self.claim_then(run, move |tx| Write::Finish(steps, write, None, tx), tx)
            }
            create => {
                let _ = self
                    .writer(write.run_id)
                    .send(Write::Finish(steps, write, create, tx));
            }
        }
        commit
    }

    fn reopen(&self, run_id: RunId) -> StoreFuture<'_, bool> {
        self.write(Some(run_id), |tx| Write::Reopen(run_id, tx))
    }

    fn reset(&self, run_id: RunId, fingerprint: Option<Fingerprint>) -> StoreFuture<'_, bool> {
        self.write(Some(run_id), |tx| Write::Reset(run_id, fingerprint, tx))
    }

    fn fork(&self, run: NewRun, from: RunId, steps: Vec<StepWrite>) -> StoreFuture<'_, ()> {
        self.write(Some(run.run_id), |tx| Write::Fork(run, from, steps, tx))
    }

    fn prune(&self, retention: Retention) -> StoreFuture<'_, u64> {
        self.write(None, |tx| Write::Prune(retention, tx))
    }

    fn get_run(&self, run_id: RunId) -> StoreFuture<'_, Option<RunRecord>> {
        self.read(move |c, s| Box::pin(get_run(c, s, run_id)))
    }

    fn list_runs(&self, filter: RunFilter) -> StoreFuture<'_, Vec<RunRecord>> {
        self.read(move |c, s| Box::pin(async move { list_runs(c, s, &filter).await }))
    }

    fn unfinished_runs(&self) -> StoreFuture<'_, Vec<RunRecord>> {
        self.read(|c, s| {
            Box::pin(async move {
                let rows = c
                    .query(
                        &*format!(
                            "SELECT {RUN_COLUMNS} FROM nanoflow_journal.runs
                             WHERE status = 'running' ORDER BY id"
                        ),
                        &[],
                    )
                    .await
                    .map_err(|e| s.error(e))?;
                with_timelines(c, s, rows).await
            })
        })
    }

    fn find_keys(
        &self,
        workflow: &'static str,
        keys: Vec<String>,
    ) -> StoreFuture<'_, Vec<(String, RunId)>> {
        self.read(move |c, s| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT idempotency_key, id FROM nanoflow_journal.runs
                         WHERE workflow = $1 AND idempotency_key = ANY($2)",
                        &[&workflow, &keys],
                    )
                    .await
                    .map_err(|e| s.error(e))?;
                Ok(rows
                    .iter()
                    .filter_map(|r| {
                        let id: String = r.get(1);
                        Some((r.get(0), id.parse().ok()?))
                    })
                    .collect())
            })
        })
    }

    fn get_state(&self, node: &'static str, key: String) -> StoreFuture<'_, Option<Bytes>> {
        self.read(move |c, s| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "SELECT value FROM nanoflow_journal.state WHERE node = $1 AND key = $2",
                        &[&node, &key],
                    )
                    .await
                    .map_err(|e| s.error(e))?;
                Ok(row.map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
            })
        })
    }

    fn deliver(&self, write: StepWrite) -> StoreFuture<'_, Delivery> {
        let args = FlowArgs {
            write: Some(write),
            ..FlowArgs::new()
        };
        Box::pin(async move {
            match self.flow(args, deliver_job).await? {
                Flowed::Delivery(d) => Ok(d),
                Flowed::Taken(taken) => Ok(match self.owned_runs(taken).await?.pop() {
                    Some(run) => Delivery::Woken(Box::new(run)),
                    None => Delivery::UnknownRun,
                }),
                _ => Ok(Delivery::UnknownRun),
            }
        })
    }

    fn suspend(&self, run_id: RunId, step: String, due_ms: Option<u64>) -> StoreFuture<'_, bool> {
        let args = FlowArgs {
            run_id: Some(run_id),
            text: step,
            due: due_ms,
            ..FlowArgs::new()
        };
        Box::pin(async move {
            match self.flow(args, suspend_job).await? {
                Flowed::Bool(b) => Ok(b),
                _ => Ok(false),
            }
        })
    }

    fn wake_due(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<RunRecord>> {
        let args = FlowArgs {
            due: Some(now_ms),
            limit,
            ..FlowArgs::new()
        };
        Box::pin(async move {
            match self.flow(args, wake_job).await? {
                Flowed::Taken(taken) => self.owned_runs(taken).await,
                _ => Ok(Vec::new()),
            }
        })
    }

    fn start_queued(
        &self,
        workflow: &'static str,
        spec: QueueSpec,
        now_ms: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<RunRecord>> {
        let args = FlowArgs {
            workflow,
            spec,
            due: Some(now_ms),
            limit,
            ..FlowArgs::new()
        };
        Box::pin(async move {
            match self.flow(args, start_queued_job).await? {
                Flowed::Taken(taken) => self.owned_runs(taken).await,
                _ => Ok(Vec::new()),
            }
        })
    }

    fn supersede(
        &self,
        workflow: &'static str,
        key: String,
        keep: RunId,
    ) -> StoreFuture<'_, Vec<RunId>> {
        let args = FlowArgs {
            workflow,
            text: key,
            run_id: Some(keep),
            ..FlowArgs::new()
        };
        Box::pin(async move {
            match self.flow(args, supersede_job).await? {
                Flowed::Ids(ids) => Ok(ids),
                _ => Ok(Vec::new()),
            }
        })
    }

    fn cancel(&self, run_id: RunId) -> StoreFuture<'_, Cancel> {
        let args = FlowArgs {
            run_id: Some(run_id),
            ..FlowArgs::new()
        };
        Box::pin(async move {
            match self.flow(args, cancel_job).await? {
                Flowed::Cancel(c) => Ok(c),
                Flowed::Taken(taken) => Ok(match self.owned_runs(taken).await?.pop() {
                    Some(run) => Cancel::Woken(Box::new(run)),
                    None => Cancel::UnknownRun,
                }),
                _ => Ok(Cancel::UnknownRun),
            }
        })
    }

    fn health(&self) -> Result<(), StoreError> {
        self.shared.health.check()
    }

    fn durable(&self) -> bool {
        true
    }

    fn transactions(&self) -> u64 {
        self.shared.transactions.load(Ordering::Relaxed)
    }

    fn shared(&self) -> bool {
        true
    }

    fn claim_orphans(&self, limit: usize) -> StoreFuture<'_, Vec<RunRecord>> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Claim(limit, tx));
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Closed)) })
    }

    fn lock_key(&self, node: &'static str, key: String) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut wait = Duration::from_millis(2);
            loop {
                let key = key.clone();
                let taken = self
                    .read(move |c, s| {
                        Box::pin(async move {
                            // Taken when free, already this runner's, or held by a runner whose
                            // lease lapsed.
                            let rows = c
                                .query(
                                    "INSERT INTO nanoflow_journal.state_locks (node, key, owner)
                                     VALUES ($1, $2, $3)
                                     ON CONFLICT (node, key) DO UPDATE SET owner = excluded.owner
                                     WHERE state_locks.owner = excluded.owner OR NOT EXISTS (
                                         SELECT 1 FROM nanoflow_journal.runners w
                                         WHERE w.owner = state_locks.owner
                                           AND w.lease_until > clock_timestamp())
                                     RETURNING 1",
                                    &[&node, &key, &s.owner],
                                )
                                .await
                                .map_err(|e| s.error(e))?;
                            Ok(!rows.is_empty())
                        })
                    })
                    .await?;
                if taken {
                    return Ok(());
                }
                // Another runner runs this key now: poll, backing off to 50 ms, jittered.
                let jitter = crate::id::random_u64() % (wait.as_millis() as u64 + 1);
                tokio::time::sleep(wait + Duration::from_millis(jitter)).await;
                wait = (wait * 2).min(Duration::from_millis(50));
            }
        })
    }

    fn unlock_key(&self, node: &'static str, key: String) -> StoreFuture<'_, ()> {
        self.read(move |c, s| {
            Box::pin(async move {
                c.execute(
                    "DELETE FROM nanoflow_journal.state_locks
                     WHERE node = $1 AND key = $2 AND owner = $3",
                    &[&node, &key, &s.owner],
                )
                .await
                .map_err(|e| s.error(e))?;
                Ok(())
            })
        })
    }

    fn owns(&self, run_id: RunId) -> bool {
        self.shared.held().contains_key(&run_id)
    }

    fn backlog(&self) -> StoreFuture<'_, Option<Backlog>> {
        self.read(|c, s| {
            Box::pin(async move {
                let row = c
                    .query_one(
                        "SELECT count(*), min(r.created_ms) FROM nanoflow_journal.runs r
                         WHERE r.status = 'running' AND (r.owner IS NULL OR NOT EXISTS (
                             SELECT 1 FROM nanoflow_journal.runners w
                             WHERE w.owner = r.owner AND w.lease_until > clock_timestamp()))",
                        &[],
                    )
                    .await
                    .map_err(|e| s.error(e))?;
                let unclaimed = row.get::<_, i64>(0) as u64;
                let oldest = row.get::<_, Option<i64>>(1);
                Ok(Some(Backlog {
                    unclaimed,
                    oldest_age: oldest
                        .map(|ms| Duration::from_millis(now_ms().saturating_sub(ms as u64)))
                        .unwrap_or_default(),
                    takeovers: s.takeovers.load(Ordering::Relaxed),
                }))
            })
        })
    }
}

/// Connects, in the store's runtime, with the connection driven by a task of its own.
async fn connect(shared: &Shared) -> Result<Client, StoreError> {
    let (client, connection) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_postgres::connect(&shared.url, NoTls),
    )
    .await
    .map_err(|_| shared.error("cannot connect: timed out after 10 s"))?
    .map_err(|e| {
        // tokio-postgres says "error connecting to server" and keeps the reason as the source.
        let why = std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
        shared.error(format!("cannot connect: {e}{why}"))
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "journal connection closed");
        }
    });
    Ok(client)
}

/// Creates or checks the schema under an advisory lock, in one transaction.
async fn install(client: &mut Client, shared: &Shared) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(|e| shared.error(e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(|e| shared.error(e))?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS nanoflow_journal;
         CREATE TABLE IF NOT EXISTS nanoflow_journal.meta (key text PRIMARY KEY, value bigint NOT NULL);",
    )
    .await
    .map_err(|e| shared.error(format!("cannot write the schema: {e}")))?;
    let version: i64 = tx
        .query_opt(
            "SELECT value FROM nanoflow_journal.meta WHERE key = 'schema_version'",
            &[],
        )
        .await
        .map_err(|e| shared.error(e))?
        .map_or(0, |r| r.get(0));
    if version > SCHEMA_VERSION {
        return Err(StoreError::Unusable(format!(
            "journal `{}` was written by a newer nanoflow (schema {version}, this build reads up to \
             {SCHEMA_VERSION}); upgrade nanoflow or use another database",
            shared.shown
        )));
    }
    if version == SCHEMA_VERSION {
        // Installed already (by another runner, maybe serving now): nothing to take a table
        // lock for.
        return tx.commit().await.map_err(|e| shared.error(e));
    }
    // Why a statement failed, from the database's own message.
    let why = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => e.to_string(),
    };
    // Version 0 is a new database; later versions migrate here, step by step.
    tx.batch_execute(SCHEMA)
        .await
        .map_err(|e| shared.error(format!("cannot write the schema: {}", why(e))))?;
    tx.batch_execute(MIGRATE_TO_2)
        .await
        .map_err(|e| shared.error(format!("cannot migrate the schema: {}", why(e))))?;
    tx.batch_execute(MIGRATE_TO_3)
        .await
        .map_err(|e| shared.error(format!("cannot migrate the schema: {}", why(e))))?;
    tx.batch_execute(MIGRATE_TO_4)
        .await
        .map_err(|e| shared.error(format!("cannot migrate the schema: {}", why(e))))?;
    tx.batch_execute(MIGRATE_TO_5)
        .await
        .map_err(|e| shared.error(format!("cannot migrate the schema: {}", why(e))))?;
    tx.execute(
        "INSERT INTO nanoflow_journal.meta (key, value) VALUES ('schema_version', $1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(|e| shared.error(e))?;
    tx.commit().await.map_err(|e| shared.error(e))
}

fn lease_secs(shared: &Shared) -> f64 {
    shared.ownership.lease.as_secs_f64()
}

/// Takes (or renews) this runner's lease. Returns whether it had lapsed before this renewal.
async fn heartbeat(client: &Client, shared: &Shared) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "WITH old AS (SELECT lease_until FROM nanoflow_journal.runners WHERE owner = $1),
                  up AS (INSERT INTO nanoflow_journal.runners (owner, runner_id, lease_until)
                         VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
                         ON CONFLICT (owner) DO UPDATE SET lease_until = excluded.lease_until)
             SELECT coalesce((SELECT lease_until < clock_timestamp() FROM old), false)",
            &[
                &shared.owner,
                &shared.ownership.runner_id,
                &lease_secs(shared),
            ],
        )
        .await
        .map_err(|e| shared.error(e))?;
    Ok(row.get(0))
}

/// After a lapsed lease: keeps only the runs this runner still owns at the epoch it knows;
/// the others were taken over, and their copies here stop at their next write.
async fn recheck_held(client: &Client, shared: &Shared) -> Result<(), StoreError> {
    let rows = client
        .query(
            "SELECT id, epoch FROM nanoflow_journal.runs WHERE owner = $1 AND status = 'running'",
            &[&shared.owner],
        )
        .await
        .map_err(|e| shared.error(e))?;
    let still: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    shared.held().retain(|id, epoch| {
        let kept = still.get(&id.to_string()) == Some(epoch);
        if !kept {
            tracing::warn!(run_id = %id, runner_id = %shared.ownership.runner_id, "this runner's lease lapsed and another runner took the run over; dropping this runner's copy");
        }
        kept
    });
    Ok(())
}

/// The store's thread: connects, installs the schema, takes the lease, then serves requests.
async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    writes_rx: Vec<mpsc::UnboundedReceiver<Write>>,
    ready: std::sync::mpsc::Sender<Result<(), StoreError>>,
) {
    let opened = async {
        let mut writer = connect(&shared).await?;
        install(&mut writer, &shared).await?;
        let readers = Arc::new(Readers::default());
        let reader = readers.client(&shared).await?;
        heartbeat(&reader, &shared).await?;
        Ok::<_, StoreError>((writer, readers))
    }
    .await;
    let (writer, readers) = match opened {
        Ok(v) => {
            let _ = ready.send(Ok(()));
            v
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let stopped = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(heartbeats(shared.clone(), readers.clone(), stopped.clone()));
    let mut first = Some(writer);
    let writer_tasks: Vec<_> = writes_rx
        .into_iter()
        .map(|rx| tokio::spawn(writer_loop(shared.clone(), first.take(), rx)))
        .collect();
    while let Some(request) = rx.recv().await {
        match request {
            Request::Read(job) => {
                tokio::spawn(job(readers.clone()));
            }
            Request::Claim(limit, reply) => {
                let (shared, readers) = (shared.clone(), readers.clone());
                tokio::spawn(async move {
                    let result = match readers.client(&shared).await {
                        Ok(c) => claim(&c, &shared, limit).await,
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(result);
                });
            }
        }
    }
    // The store was dropped (its write sender with it): finish the queued writes, then hand
    // the lease back so that others resume what this runner leaves at once.
    for task in writer_tasks {
        let _ = task.await;
    }
    stopped.notify_one();
    if let Ok(c) = readers.client(&shared).await {
        let _ = c
            .execute(
                "UPDATE nanoflow_journal.runners SET lease_until = clock_timestamp() WHERE owner = $1",
                &[&shared.owner],
            )
            .await;
    }
}

/// Renews the lease every third of its length.
async fn heartbeats(shared: Arc<Shared>, readers: Arc<Readers>, stopped: Arc<tokio::sync::Notify>) {
    let every = shared.ownership.lease / 3;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stopped.notified() => return,
        }
        let beat = async {
            let c = readers.client(&shared).await?;
            if heartbeat(&c, &shared).await? {
                tracing::warn!(runner_id = %shared.ownership.runner_id, "this runner's lease lapsed (the database was unreachable or the process stalled); checking which runs it still owns");
                recheck_held(&c, &shared).await?;
            }
            Ok::<_, StoreError>(())
        };
        if let Err(e) = beat.await {
            tracing::warn!(error = %e, "journal heartbeat failed");
        }
    }
}

/// Claims up to `limit` running runs of runners whose lease lapsed, under new epochs, and
/// reads them with their timelines.
async fn claim(
    client: &Client,
    shared: &Shared,
    limit: usize,
) -> Result<Vec<RunRecord>, StoreError> {
    let rows = client
        .query(
            "UPDATE nanoflow_journal.runs SET owner = $1, epoch = epoch + 1
             WHERE id IN (
                 SELECT r.id FROM nanoflow_journal.runs r
                 WHERE r.status = 'running' AND r.owner IS DISTINCT FROM $1
                   AND NOT EXISTS (SELECT 1 FROM nanoflow_journal.runners w
                                   WHERE w.owner = r.owner AND w.lease_until > clock_timestamp())
                 ORDER BY r.id LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, epoch",
            &[&shared.owner, &(limit as i64)],
        )
        .await
        .map_err(|e| shared.error(e))?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::with_capacity(rows.len());
    {
        let mut held = shared.held();
        for row in &rows {
            let id: String = row.get(0);
            if let Ok(run_id) = id.parse::<RunId>() {
                held.insert(run_id, row.get(1));
            }
            ids.push(id);
        }
    }
    shared
        .takeovers
        .fetch_add(rows.len() as u64, Ordering::Relaxed);
    let runs = client
        .query(
            &*format!(
                "SELECT {RUN_COLUMNS} FROM nanoflow_journal.runs WHERE id = ANY($1) ORDER BY id"
            ),
            &[&ids],
        )
        .await
        .map_err(|e| shared.error(e))?;
    with_timelines(client, shared, runs).await
}

/// The reader connection, reconnected when it closes.
#[derive(Default)]
struct Readers {
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Readers {
    async fn client(&self, shared: &Shared) -> Result<Arc<Client>, StoreError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(connect(shared).await?);
        *slot = Some(c.clone());
        Ok(c)
    }
}

/// The writer's prepared statements.
struct Statements {
    /// [`APPLY`] in its variants, by [`Shape::index`].
    apply: Vec<Statement>,
    create_keyed: Statement,
    find_key: Statement,
    fence: Statement,
    guard: Statement,
    reopen: Statement,
    reset: Statement,
    forked: Statement,
    prune: Statement,
}

impl Statements {
    async fn prepare(c: &Client) -> Result<Self, tokio_postgres::Error> {
        // Every writer statement reaches its rows by key. A prepared statement's plan is
        // cached once made, and one made while the journal was nearly empty (a new database,
        // statistics not yet gathered) scans whole tables, and keeps scanning them as they
        // grow, until the next `ANALYZE`: under load, that scan of `runs` for the ownership
        // check was most of PostgreSQL's time (issue 12).
        c.batch_execute("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan")
            .await?;
        Ok(Self {
            apply: {
                let mut apply = Vec::with_capacity(Shape::COUNT);
                for i in 0..Shape::COUNT {
                    apply.push(c.prepare(&Shape::from_index(i).sql()).await?);
                }
                apply
            },
            create_keyed: c
                .prepare(
                    "WITH ins AS (
                         INSERT INTO nanoflow_journal.runs
                             (id, workflow, status, input, idempotency_key, created_ms, owner, epoch,
                              fingerprint, limit_key, priority, due_ms)
                         VALUES ($1, $2, CASE WHEN $8::text IS NULL THEN 'running' ELSE 'queued' END,
                                 $3, $4, $5, $6, 1, $7, $8, $9, $10)
                         ON CONFLICT DO NOTHING RETURNING id)
                     SELECT id, true FROM ins
                     UNION ALL
                     SELECT id, false FROM nanoflow_journal.runs
                     WHERE workflow = $2 AND idempotency_key = $4 AND NOT EXISTS (SELECT 1 FROM ins)",
                )
                .await?,
            find_key: c
                .prepare(
                    "SELECT id FROM nanoflow_journal.runs WHERE workflow = $1 AND idempotency_key = $2",
                )
                .await?,
            fence: c
                .prepare(
                    "SELECT id, epoch FROM nanoflow_journal.runs
                     WHERE id = ANY($1) AND owner = $2 FOR NO KEY UPDATE",
                )
                .await?,
            // The ownership check of the optimistic path: locks the runs like `fence`, and
            // fails (a division by zero, aborting the transaction) unless every one still has
            // this owner and the epoch this runner holds.
            guard: c
                .prepare(
                    "WITH held AS (
                         SELECT r.id FROM nanoflow_journal.runs r
                         JOIN unnest($1::text[], $3::bigint[]) AS h(id, epoch)
                           ON r.id = h.id AND r.epoch = h.epoch
                         WHERE r.owner = $2
                         FOR NO KEY UPDATE OF r)
                     SELECT 1 / (CASE WHEN (SELECT count(*) FROM held) = cardinality($1::text[])
                                      THEN 1 ELSE 0 END)",
                )
                .await?,
            prune: c
                .prepare(
                    "WITH doomed AS (
                         SELECT id FROM nanoflow_journal.runs
                         WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_ms < $1
                         UNION
                         SELECT id FROM (SELECT id FROM nanoflow_journal.runs
                                         WHERE status IN ('succeeded', 'failed', 'cancelled')
                                         ORDER BY id DESC OFFSET $2) beyond),
                     gone AS (DELETE FROM nanoflow_journal.steps
                              WHERE run_id IN (SELECT id FROM doomed)),
                     removed AS (DELETE FROM nanoflow_journal.runs
                                 WHERE id IN (SELECT id FROM doomed) RETURNING 1)
                     SELECT count(*) FROM removed",
                )
                .await?,
            reopen: c
                .prepare(
                    "UPDATE nanoflow_journal.runs SET status = 'running', error = NULL,
                         finished_ms = NULL, owner = $2, epoch = epoch + 1
                     WHERE id = $1 AND status IN ('failed', 'blocked') RETURNING epoch",
                )
                .await?,
            reset: c
                .prepare(
                    "WITH up AS (
                         UPDATE nanoflow_journal.runs SET status = 'running', error = NULL,
                             output = NULL, finished_ms = NULL, fingerprint = $3, owner = $2,
                             epoch = epoch + 1
                         WHERE id = $1 AND status IN ('failed', 'blocked') RETURNING id, epoch),
                     gone AS (DELETE FROM nanoflow_journal.steps
                              WHERE run_id IN (SELECT id FROM up))
                     SELECT epoch FROM up",
                )
                .await?,
            forked: c
                .prepare("UPDATE nanoflow_journal.runs SET forked_from = $2 WHERE id = $1")
                .await?,
        })
    }
}

/// How often a failing journal is probed, so that recovery is noticed without a run risking
/// its steps on it.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// A connected writer with its statements.
struct Writer {
    client: Client,
    statements: Statements,
}

async fn writer_connect(shared: &Shared) -> Result<Writer, StoreError> {
    let client = connect(shared).await?;
    let statements = Statements::prepare(&client)
        .await
        .map_err(|e| shared.error(e))?;
    Ok(Writer { client, statements })
}

async fn writer_loop(
    shared: Arc<Shared>,
    client: Option<Client>,
    mut rx: mpsc::UnboundedReceiver<Write>,
) {
    // Without a connection yet, the first batch connects.
    let mut writer = match client {
        Some(client) => match Statements::prepare(&client).await {
            Ok(statements) => Some(Writer { client, statements }),
            Err(e) => {
                shared.health.failed(&shared.error(e).to_string());
                None
            }
        },
        None => None,
    };
    loop {
        let first = if shared.health.check().is_err() {
            tokio::select! {
                w = rx.recv() => w,
                () = tokio::time::sleep(PROBE_EVERY) => {
                    probe(&shared, &mut writer).await;
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        if writer.as_ref().is_none_or(|w| w.client.is_closed()) {
            match writer_connect(&shared).await {
                Ok(w) => writer = Some(w),
                Err(e) => {
                    shared.health.failed(&e.to_string());
                    for w in batch {
                        w.fail(e.clone());
                    }
                    continue;
                }
            }
        }
        let Some(w) = writer.as_mut() else { continue };
        match commit(w, &shared, &batch).await {
            Ok(outcome) => {
                shared.transactions.fetch_add(1, Ordering::Relaxed);
                shared.health.succeeded(&shared.shown);
                outcome.apply(&shared, batch);
            }
            Err(e) if w.client.is_closed() || is_connection_error(&e) => {
                let e = shared.error(e);
                shared.health.failed(&e.to_string());
                for w in batch {
                    w.fail(e.clone());
                }
            }
            // One write failed on its own (the transaction rolled back): apply each in its
            // own transaction, so that only the failing ones fail.
            Err(first_error) => {
                tracing::debug!(error = %first_error, "journal batch failed; retrying its writes one by one");
                for write in batch {
                    let one = [write];
                    match commit(w, &shared, &one).await {
                        Ok(outcome) => {
                            shared.transactions.fetch_add(1, Ordering::Relaxed);
                            outcome.apply(&shared, one.into_iter().collect());
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "journal write failed");
                            let [write] = one;
                            write.fail(shared.error(e));
                        }
                    }
                }
            }
        }
    }
}

fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    // A server-side error has a SQLSTATE; its class 08 is a connection exception, 57 an
    // operator intervention (a shutdown).
    match e.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("57") || c.starts_with("53")
        }
    }
}

/// A write transaction that changes nothing but must reach the database.
async fn probe(shared: &Shared, writer: &mut Option<Writer>) {
    if writer.as_ref().is_none_or(|w| w.client.is_closed()) {
        match writer_connect(shared).await {
            Ok(w) => *writer = Some(w),
            Err(e) => {
                shared.health.failed(&e.to_string());
                return;
            }
        }
    }
    let Some(w) = writer.as_ref() else { return };
    match w
        .client
        .batch_execute("BEGIN; SELECT 1 FROM nanoflow_journal.meta LIMIT 1 FOR UPDATE; COMMIT;")
        .await
    {
        Ok(()) => shared.health.succeeded(&shared.shown),
        Err(e) => {
            let _ = w.client.batch_execute("ROLLBACK").await;
            shared.health.failed(&shared.error(e).to_string());
        }
    }
}

/// What a committed batch produced, for the replies.
struct Outcome {
    /// One result per write, in order.
    results: Vec<Result<Done, StoreError>>,
    /// Runs this batch created (owned by this runner at epoch 1), reopened, or ended.
    created: Vec<RunId>,
    reopened: Vec<(RunId, i64)>,
    ended: Vec<RunId>,
}

enum Done {
    Created(Created),
    Unit,
    Bool(bool),
    Count(u64),
}

impl Outcome {
    fn apply(self, shared: &Shared, batch: Vec<Write>) {
        {
            let mut held = shared.held();
            for id in self.created {
                held.insert(id, 1);
            }
            for (id, epoch) in self.reopened {
                held.insert(id, epoch);
            }
            for id in self.ended {
                held.remove(&id);
            }
        }
        for (write, result) in batch.into_iter().zip(self.results) {
            match (write, result) {
                (w, Err(e)) => w.fail(e),
                (Write::Create(_, tx), Ok(Done::Created(c))) => drop(tx.send(Ok(c))),
                (Write::Step(_, _, tx) | Write::Finish(_, _, _, tx), Ok(_)) => {
                    drop(tx.send(Ok(())))
                }
                (Write::Reopen(_, tx) | Write::Reset(_, _, tx), Ok(d)) => {
                    drop(tx.send(Ok(matches!(d, Done::Bool(true)))))
                }
                (Write::Fork(_, _, _, tx), Ok(_)) => drop(tx.send(Ok(()))),
                (Write::Prune(_, tx), Ok(d)) => drop(tx.send(Ok(match d {
                    Done::Count(n) => n,
                    _ => 0,
                }))),
                (Write::Create(_, tx), Ok(_)) => drop(tx.send(Ok(Created::New))),
            }
        }
    }
}

/// Owned parameters of one statement.
type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// What a statement of a batch is, to read its result.
enum Op {
    /// An [`APPLY`] (`RETURNING` the ids of the runs it inserted).
    Apply(Shape),
    /// The creation of a run with a key: its id and whether it is new, or nothing (a
    /// concurrent transaction committed the key after this statement's snapshot).
    CreateKeyed(usize, RunId),
    Reopen(usize, RunId),
    Prune(usize),
    /// A statement whose result is only success.
    Plain,
}

/// Writes a batch's run rows, attempts, node states (releasing their keys' locks) and ends in
/// one statement, whatever their number: one array per column, `unnest`ed (issue 12: one
/// statement per record made a batch's cost grow with its size). The arrays are unnested in
/// a select list, which streams their rows; `FROM unnest(a, b, ...)` first copied them into
/// a tuple store (3 % to 6 % more runs a second without it). A run created and ended in
/// the same batch is inserted ended. The sub-statements see the same snapshot, not each
/// other's rows: the update of ends reaches only runs that existed before (one whose insert
/// found its row there already included), never a row inserted beside it, so nothing is
/// written twice. Returns the ids of the runs inserted.
const APPLY: &str = "
WITH created AS (
    INSERT INTO nanoflow_journal.runs
        (id, workflow, status, input, output, error, idempotency_key, created_ms, finished_ms,
         owner, epoch, fingerprint, limit_key, priority, due_ms)
    SELECT u.id, u.workflow,
           coalesce(u.status, CASE WHEN u.limit_key IS NULL THEN 'running' ELSE 'queued' END),
           u.input, u.output, u.error, u.key, $2::int8,
           CASE WHEN u.status IS NULL THEN NULL ELSE $2::int8 END, $1::text, 1, u.fingerprint,
           u.limit_key, u.priority, CASE WHEN u.status IS NULL THEN u.due END
    FROM (SELECT unnest($3::text[]) AS id, unnest($4::text[]) AS workflow,
                 unnest($5::bytea[]) AS input, unnest($6::text[]) AS key,
                 unnest($7::int8[]) AS fingerprint, unnest($8::text[]) AS limit_key,
                 unnest($9::int8[]) AS priority, unnest($10::int8[]) AS due,
                 unnest($11::text[]) AS status, unnest($12::bytea[]) AS output,
                 unnest($13::text[]) AS error) AS u
    ON CONFLICT DO NOTHING RETURNING id),
steps AS (
    INSERT INTO nanoflow_journal.steps
        (run_id, step, attempt, status, output, error, started_ms, duration_us, output_fp,
         place_fp, seq)
    SELECT unnest($14::text[]), unnest($15::text[]), unnest($16::int4[]), unnest($17::text[]),
           unnest($18::bytea[]), unnest($19::text[]), unnest($20::int8[]), unnest($21::int8[]),
           unnest($22::int8[]), unnest($23::int8[]), unnest($31::int8[])
    ON CONFLICT (run_id, step, attempt) DO UPDATE SET status = excluded.status,
        output = excluded.output, error = excluded.error, started_ms = excluded.started_ms,
        duration_us = excluded.duration_us, output_fp = excluded.output_fp,
        place_fp = excluded.place_fp, seq = excluded.seq),
states AS (
    INSERT INTO nanoflow_journal.state (node, key, value)
    SELECT * FROM unnest($24::text[], $25::text[], $26::bytea[])
    ON CONFLICT (node, key) DO UPDATE SET value = excluded.value),
unlocked AS (
    DELETE FROM nanoflow_journal.state_locks l
    USING unnest($24::text[], $25::text[]) AS u(node, key)
    WHERE l.key = ANY($25::text[]) AND l.node = u.node AND l.key = u.key AND l.owner = $1::text),
ended AS (
    UPDATE nanoflow_journal.runs r SET status = u.status, output = u.output, error = u.error,
        finished_ms = $2::int8, due_ms = NULL
    FROM (SELECT unnest($27::text[]) AS id, unnest($28::text[]) AS status,
                 unnest($29::bytea[]) AS output, unnest($30::text[]) AS error) AS u
    WHERE r.id = ANY($27::text[]) AND r.id = u.id)
SELECT id FROM created";

/// Which variant of [`APPLY`] a group needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// With the ownership check of [`Statements::guard`] (ids `$32`, epochs `$33`): the check
    /// locks the runs before the statement's other writes run (a data-modifying `WITH` not
    /// read by the query runs after it), and fails the whole statement unless every run is
    /// still this runner's at the epoch it holds. Should a run's lock be skipped, the count
    /// falls short and the batch is applied checked first instead.
    guarded: bool,
    /// Tolerates rows already there: a run row (`ON CONFLICT DO NOTHING`) or an attempt
    /// (`ON CONFLICT DO UPDATE`). A batch is first sent strict, which spares PostgreSQL the
    /// speculative insertion of every row (a probe of the unique index before each insert,
    /// and a lock around it); a row already there (a batch sent again after a lost answer,
    /// a run taken over) fails it with a unique violation, having written nothing, and it is
    /// sent again tolerant.
    tolerant: bool,
    /// Writes node states (and releases their keys' locks); without them their parameters
    /// are only typed, and PostgreSQL starts two sub-statements fewer.
    states: bool,
}

impl Shape {
    const COUNT: usize = 8;

    fn index(self) -> usize {
        usize::from(self.guarded) << 2 | usize::from(self.tolerant) << 1 | usize::from(self.states)
    }

    fn from_index(i: usize) -> Self {
        Self {
            guarded: i & 4 != 0,
            tolerant: i & 2 != 0,
            states: i & 1 != 0,
        }
    }

    /// The statement's text.
    fn sql(self) -> String {
        let mut sql = APPLY.to_owned();
        if !self.tolerant {
            sql = sql.replacen(
                "\n    ON CONFLICT DO NOTHING RETURNING id)",
                "\n    RETURNING id)",
                1,
            );
            let from = sql
                .find("\n    ON CONFLICT (run_id, step, attempt)")
                .expect("APPLY");
            let to = from + sql[from..].find("seq = excluded.seq)").expect("APPLY");
            sql.replace_range(from..to + "seq = excluded.seq".len(), "");
        }
        if !self.states {
            let from = sql.find("states AS (").expect("APPLY");
            let to = sql.find("ended AS (").expect("APPLY");
            sql.replace_range(
                from..to,
                "states AS (SELECT $24::text[], $25::text[], $26::bytea[]),\n",
            );
        }
        if self.guarded {
            sql = sql.replacen(
                "\nSELECT id FROM created",
                ",
held AS (
    SELECT r.id FROM nanoflow_journal.runs r
    JOIN unnest($32::text[], $33::int8[]) AS h(id, epoch) ON r.id = h.id AND r.epoch = h.epoch
    WHERE r.owner = $1::text
    FOR NO KEY UPDATE OF r)
SELECT id FROM created
UNION ALL
SELECT NULL WHERE 1 / (CASE WHEN (SELECT count(*) FROM held) = cardinality($32::text[])
                            THEN 1 ELSE 0 END) = 0",
                1,
            );
        }
        sql
    }
}

/// The records of a batch written by one [`APPLY`]: those whose order does not matter, or is
/// kept by its sub-statements' fixed order (a run's row before its attempts and its end).
#[derive(Default)]
struct Group<'b> {
    /// Run rows to insert, each with its end when it ends in the same batch.
    runs: Vec<(&'b NewRun, Option<&'b FinishWrite>)>,
    run_at: HashMap<RunId, usize>,
    steps: Vec<&'b StepWrite>,
    step_at: HashMap<(RunId, &'b str, u32), usize>,
    states: Vec<(&'static str, &'b str, &'b Bytes)>,
    state_at: HashMap<(&'static str, &'b str), usize>,
    ends: Vec<&'b FinishWrite>,
    end_at: HashMap<RunId, usize>,
}

/// Puts `item` in `items` once per key: a later one replaces the earlier (one statement may
/// not update a row twice; issue order makes the later one the record).
fn keep_last<K: std::hash::Hash + Eq, T>(
    items: &mut Vec<T>,
    at: &mut HashMap<K, usize>,
    key: K,
    item: T,
) {
    match at.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => items[*e.get()] = item,
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(items.len());
            items.push(item);
        }
    }
}

impl<'b> Group<'b> {
    fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.steps.is_empty() && self.ends.is_empty()
    }

    fn run(&mut self, run: &'b NewRun) {
        // A second row of the same id would be refused by the first, as in two statements.
        if let std::collections::hash_map::Entry::Vacant(e) = self.run_at.entry(run.run_id) {
            e.insert(self.runs.len());
            self.runs.push((run, None));
        }
    }

    fn step(&mut self, step: &'b StepWrite) {
        keep_last(
            &mut self.steps,
            &mut self.step_at,
            (step.run_id, step.step.as_ref(), step.attempt),
            step,
        );
        if let Some((node, key, value)) = &step.state {
            keep_last(
                &mut self.states,
                &mut self.state_at,
                (*node, key.as_str()),
                (*node, key.as_str(), value),
            );
        }
    }

    fn end(&mut self, end: &'b FinishWrite) {
        if let Some(&i) = self.run_at.get(&end.run_id) {
            self.runs[i].1 = Some(end);
        }
        keep_last(&mut self.ends, &mut self.end_at, end.run_id, end);
        for run in &end.chained {
            self.run(run);
        }
    }

    /// Adds the group's [`APPLY`] to `ops` (tolerant of rows already there or not), and starts
    /// an empty group.
    fn flush<'s>(
        &mut self,
        statements: &'s Statements,
        tolerant: bool,
        shared: &Shared,
        ops: &mut Vec<(&'s Statement, Params, Op)>,
    ) {
        if !self.is_empty() {
            let shape = Shape {
                guarded: false,
                tolerant,
                states: !self.states.is_empty(),
            };
            ops.push((
                &statements.apply[shape.index()],
                self.params(shared),
                Op::Apply(shape),
            ));
            *self = Group::default();
        }
    }

    /// The parameters of [`APPLY`].
    fn params(&self, shared: &Shared) -> Params {
        let n = self.runs.len();
        let mut ids = Vec::with_capacity(n);
        let mut workflows = Vec::with_capacity(n);
        let mut inputs = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut prints = Vec::with_capacity(n);
        let mut limit_keys = Vec::with_capacity(n);
        let mut priorities = Vec::with_capacity(n);
        let mut dues = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut outputs = Vec::with_capacity(n);
        let mut errors = Vec::with_capacity(n);
        for (run, end) in &self.runs {
            ids.push(run.run_id.to_string());
            workflows.push(run.workflow);
            inputs.push(run.input.to_vec());
            keys.push(run.idempotency_key.clone());
            prints.push(run.fingerprint.map(|f| f.0 as i64));
            limit_keys.push(run.queued.as_ref().map(|q| q.key.clone()));
            priorities.push(run.queued.as_ref().map_or(0, |q| q.priority));
            dues.push(run.queued.as_ref().map(|q| q.due_ms as i64));
            let (status, output, error) = match end {
                Some(end) => {
                    let (status, output, error) = end_columns(end);
                    (Some(status), output, error)
                }
                None => (None, None, None),
            };
            statuses.push(status);
            outputs.push(output);
            errors.push(error);
        }
        let n = self.steps.len();
        let mut step_runs = Vec::with_capacity(n);
        let mut names = Vec::with_capacity(n);
        let mut attempts = Vec::with_capacity(n);
        let mut step_statuses = Vec::with_capacity(n);
        let mut step_outputs = Vec::with_capacity(n);
        let mut step_errors = Vec::with_capacity(n);
        let mut started = Vec::with_capacity(n);
        let mut durations = Vec::with_capacity(n);
        let mut output_fps = Vec::with_capacity(n);
        let mut place_fps = Vec::with_capacity(n);
        let mut seqs = Vec::with_capacity(n);
        for step in &self.steps {
            let (status, output, error) = match &step.outcome {
                Ok(out) if step.attempt == super::WAIT_ATTEMPT => {
                    ("waiting", Some(out.to_vec()), None)
                }
                Ok(out) => ("succeeded", Some(out.to_vec()), None),
                Err(e) => ("failed", None, Some(e.to_string())),
            };
            step_runs.push(step.run_id.to_string());
            names.push(step.step.to_string());
            attempts.push(step.attempt as i32);
            step_statuses.push(status);
            step_outputs.push(output);
            step_errors.push(error);
            started.push(step.started_ms as i64);
            durations.push(step.duration_us as i64);
            output_fps.push(step.fingerprint.map(|f| f.output.0 as i64));
            place_fps.push(step.fingerprint.map(|f| f.place.0 as i64));
            seqs.push(super::next_step_seq());
        }
        let mut nodes = Vec::with_capacity(self.states.len());
        let mut state_keys = Vec::with_capacity(self.states.len());
        let mut values = Vec::with_capacity(self.states.len());
        for (node, key, value) in &self.states {
            nodes.push(*node);
            state_keys.push(key.to_string());
            values.push(value.to_vec());
        }
        let n = self.ends.len();
        let mut end_ids = Vec::with_capacity(n);
        let mut end_statuses = Vec::with_capacity(n);
        let mut end_outputs = Vec::with_capacity(n);
        let mut end_errors = Vec::with_capacity(n);
        for end in &self.ends {
            let (status, output, error) = end_columns(end);
            end_ids.push(end.run_id.to_string());
            end_statuses.push(status);
            end_outputs.push(output);
            end_errors.push(error);
        }
        vec![
            Box::new(shared.owner.clone()),
            Box::new(now_ms() as i64),
            Box::new(ids),
            Box::new(workflows),
            Box::new(inputs),
            Box::new(keys),
            Box::new(prints),
            Box::new(limit_keys),
            Box::new(priorities),
            Box::new(dues),
            Box::new(statuses),
            Box::new(outputs),
            Box::new(errors),
            Box::new(step_runs),
            Box::new(names),
            Box::new(attempts),
            Box::new(step_statuses),
            Box::new(step_outputs),
            Box::new(step_errors),
            Box::new(started),
            Box::new(durations),
            Box::new(output_fps),
            Box::new(place_fps),
            Box::new(nodes),
            Box::new(state_keys),
            Box::new(values),
            Box::new(end_ids),
            Box::new(end_statuses),
            Box::new(end_outputs),
            Box::new(end_errors),
            Box::new(seqs),
        ]
    }
}

/// A run's end as its status, output and error columns.
fn end_columns(end: &FinishWrite) -> (&'static str, Option<Vec<u8>>, Option<String>) {
    match &end.outcome {
        Ok(out) => ("succeeded", Some(out.to_vec()), None),
        Err(e) => (e.status().as_str(), None, serde_json::to_string(e).ok()),
    }
}

/// A keyed creation's parameters.
fn keyed_params(shared: &Shared, run: &NewRun) -> Params {
    vec![
        Box::new(run.run_id.to_string()),
        Box::new(run.workflow),
        Box::new(run.input.to_vec()),
        Box::new(run.idempotency_key.clone()),
        Box::new(now_ms() as i64),
        Box::new(shared.owner.clone()),
        Box::new(run.fingerprint.map(|f| f.0 as i64)),
        Box::new(run.queued.as_ref().map(|q| q.key.clone())),
        Box::new(run.queued.as_ref().map_or(0, |q| q.priority)),
        Box::new(run.queued.as_ref().map(|q| q.due_ms as i64)),
    ]
}

/// Applies `batch` in one transaction, pipelined: `BEGIN` and the ownership check of every run
/// it writes (which also locks them against a concurrent claim) in one round trip, then its
/// statements and the `COMMIT` in a second. The statements are one [`APPLY`] for the records
/// of every run, whatever their number, plus one per write that needs its own; a batch
/// needing neither the check nor more than one statement is that statement alone, one round
/// trip. Writes of runs another runner took over fail with a fencing error; the rest commit.
async fn commit(
    w: &mut Writer,
    shared: &Shared,
    batch: &[Write],
) -> Result<Outcome, tokio_postgres::Error> {
    use tokio_postgres::error::SqlState;
    let mut optimistic = true;
    let mut tolerant = batch.iter().any(Write::rewrites);
    loop {
        let result = commit_pipelined(w, shared, batch, optimistic, tolerant).await;
        let code = result.as_ref().err().and_then(|e| e.code());
        if optimistic && code == Some(&SqlState::DIVISION_BY_ZERO) {
            // A run of the batch is not this runner's any more: nothing was written; the
            // checked path finds which, and writes the others.
            optimistic = false;
        } else if !tolerant && code == Some(&SqlState::UNIQUE_VIOLATION) {
            // A row of the batch is there already (see [`Shape::tolerant`]): nothing was
            // written; send it again tolerant.
            tolerant = true;
        } else {
            if result.is_err() && !w.client.is_closed() {
                // A failed statement aborted the transaction and `COMMIT` rolled it back;
                // make sure.
                let _ = w.client.batch_execute("ROLLBACK").await;
            }
            return result;
        }
        if w.client.is_closed() {
            return result;
        }
        let _ = w.client.batch_execute("ROLLBACK").await;
    }
}

/// Applies `batch`. `optimistic`: when this runner holds every run the batch writes (the common
/// case), their ownership is checked by a statement sent with the others ([`Statements::guard`]),
/// so the whole batch costs one round trip; the guard fails the transaction if one was taken
/// over, and the caller runs the batch again checked first. `tolerant`: see
/// [`Shape::tolerant`].
async fn commit_pipelined(
    w: &mut Writer,
    shared: &Shared,
    batch: &[Write],
    optimistic: bool,
    tolerant: bool,
) -> Result<Outcome, tokio_postgres::Error> {
    let s = &w.statements;
    let c = &w.client;
    // Runs created in this batch are this runner's: their writes need no check.
    let mut creating: HashSet<RunId> = HashSet::new();
    for write in batch {
        match write {
            Write::Create(r, _)
            | Write::Step(_, Some(r), _)
            | Write::Finish(_, _, Some(r), _)
            | Write::Fork(r, _, _, _) => {
                creating.insert(r.run_id);
            }
            _ => {}
        }
    }
    let to_check: Vec<RunId> = batch
        .iter()
        .filter_map(Write::fenced_run)
        .filter(|id| !creating.contains(id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut fenced: HashSet<RunId> = HashSet::new();
    // The epochs this runner holds for the runs to check, when it holds them all.
    let held_epochs: Option<Vec<i64>> = if optimistic && !to_check.is_empty() {
        let held = shared.held();
        to_check.iter().map(|id| held.get(id).copied()).collect()
    } else {
        None
    };
    let guard: Option<Params> = held_epochs.map(|epochs| -> Params {
        vec![
            Box::new(to_check.iter().map(RunId::to_string).collect::<Vec<_>>()),
            Box::new(shared.owner.clone()),
            Box::new(epochs),
        ]
    });
    let begun = if to_check.is_empty() || guard.is_some() {
        false
    } else {
        let ids: Vec<String> = to_check.iter().map(RunId::to_string).collect();
        let (begin, rows) = futures_util::future::join(
            c.batch_execute("BEGIN"),
            c.query(&s.fence, &[&ids, &shared.owner]),
        )
        .await;
        begin?;
        let rows = rows?;
        let found: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let held = shared.held();
        for id in &to_check {
            let current = found.get(&id.to_string());
            if current.is_none() || current != held.get(id) {
                fenced.insert(*id);
            }
        }
        true
    };

    let mut outcome = Outcome {
        results: Vec::with_capacity(batch.len()),
        created: Vec::new(),
        reopened: Vec::new(),
        ended: Vec::new(),
    };
    // Runs' records go in one statement ([`APPLY`]) for every run; a write with a statement
    // of its own (a keyed creation, a reopening, a reset, a fork, a prune) ends the group
    // before it and starts another after it, so that every run's writes apply in issue order.
    let mut ops: Vec<(&Statement, Params, Op)> = Vec::new();
    let mut group = Group::default();
    for (i, write) in batch.iter().enumerate() {
        if let Some(id) = write.fenced_run().filter(|id| fenced.contains(id)) {
            outcome.results.push(Err(StoreError::Unavailable(format!(
                "run {id} is owned by another runner now (it took the run over while this one \
                 could not renew its lease); this runner's write was refused and its copy stops"
            ))));
            continue;
        }
        let done = match write {
            Write::Create(run, _) => {
                match &run.idempotency_key {
                    Some(_) => {
                        group.flush(s, tolerant, shared, &mut ops);
                        ops.push((
                            &s.create_keyed,
                            keyed_params(shared, run),
                            Op::CreateKeyed(i, run.run_id),
                        ));
                    }
                    None => group.run(run),
                }
                // Filled in from the statement's result when keyed.
                Done::Created(Created::New)
            }
            Write::Step(steps, create, _) => {
                if let Some(run) = create {
                    group.run(run);
                }
                for step in steps {
                    group.step(step);
                }
                Done::Unit
            }
            Write::Finish(steps, finish, create, _) => {
                if let Some(run) = create {
                    group.run(run);
                }
                for step in steps {
                    group.step(step);
                }
                group.end(finish);
                outcome.ended.push(finish.run_id);
                Done::Unit
            }
            Write::Reopen(run_id, _) => {
                group.flush(s, tolerant, shared, &mut ops);
                ops.push((
                    &s.reopen,
                    vec![Box::new(run_id.to_string()), Box::new(shared.owner.clone())],
                    Op::Reopen(i, *run_id),
                ));
                Done::Bool(false)
            }
            Write::Reset(run_id, fingerprint, _) => {
                group.flush(s, tolerant, shared, &mut ops);
                ops.push((
                    &s.reset,
                    vec![
                        Box::new(run_id.to_string()),
                        Box::new(shared.owner.clone()),
                        Box::new(fingerprint.map(|f| f.0 as i64)),
                    ],
                    Op::Reopen(i, *run_id),
                ));
                Done::Bool(false)
            }
            Write::Fork(run, from, steps, _) => {
                group.flush(s, tolerant, shared, &mut ops);
                group.run(run);
                for step in steps {
                    group.step(step);
                }
                group.flush(s, tolerant, shared, &mut ops);
                ops.push((
                    &s.forked,
                    vec![Box::new(run.run_id.to_string()), Box::new(from.to_string())],
                    Op::Plain,
                ));
                Done::Unit
            }
            Write::Prune(retention, _) => {
                group.flush(s, tolerant, shared, &mut ops);
                let cutoff = now_ms().saturating_sub(retention.max_age.as_millis() as u64) as i64;
                let keep = retention.max_runs.min(i64::MAX as u64) as i64;
                ops.push((
                    &s.prune,
                    vec![Box::new(cutoff), Box::new(keep)],
                    Op::Prune(i),
                ));
                Done::Count(0)
            }
        };
        outcome.results.push(Ok(done));
    }
    group.flush(s, tolerant, shared, &mut ops);
    if let Some(params) = guard {
        if let [(statement, apply, Op::Apply(shape))] = &mut ops[..] {
            // The common batch, records only: the check goes in the same statement
            // ([`Shape::guarded`]), a transaction of its own.
            let mut params = params.into_iter();
            apply.extend(params.next());
            apply.extend(params.nth(1));
            *shape = Shape {
                guarded: true,
                ..*shape
            };
            *statement = &s.apply[shape.index()];
        } else {
            ops.insert(0, (&s.guard, params, Op::Plain));
        }
    }

    let refs: Vec<Vec<&(dyn ToSql + Sync)>> = ops
        .iter()
        .map(|(_, params, _)| params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect())
        .collect();
    let rows_of = if !begun && ops.len() == 1 {
        // One statement is a transaction of its own (committed before its answer ends, at
        // `ReadyForQuery`): no `BEGIN` or `COMMIT` to send.
        vec![c.query(ops[0].0, &refs[0]).await?]
    } else {
        // Every statement, then `COMMIT`, sent without waiting for each answer (the server
        // runs them in order; a failing one aborts the transaction, and `COMMIT` then rolls
        // it back).
        let mut calls: Vec<BoxFuture<'_, Result<Vec<Row>, tokio_postgres::Error>>> = Vec::new();
        if !begun {
            calls.push(Box::pin(async {
                c.batch_execute("BEGIN").await.map(|()| Vec::new())
            }));
        }
        for ((statement, _, _), params) in ops.iter().zip(&refs) {
            calls.push(Box::pin(c.query(*statement, params)));
        }
        calls.push(Box::pin(async {
            c.batch_execute("COMMIT").await.map(|()| Vec::new())
        }));
        let mut answers = futures_util::future::join_all(calls).await.into_iter();
        if !begun {
            answers.next().transpose()?;
        }
        let mut rows_of = Vec::with_capacity(ops.len());
        for _ in &ops {
            rows_of.push(answers.next().transpose()?.unwrap_or_default());
        }
        answers.next().transpose()?;
        rows_of
    };

    let mut unresolved = Vec::new();
    for ((_, _, op), rows) in ops.iter().zip(rows_of) {
        match op {
            Op::Apply(_) => {
                for r in &rows {
                    let id = r.get::<_, Option<String>>(0);
                    if let Some(Ok(id)) = id.map(|id| id.parse()) {
                        outcome.created.push(id);
                    }
                }
            }
            Op::CreateKeyed(i, id) => match rows.first() {
                Some(r) if r.get::<_, bool>(1) => outcome.created.push(*id),
                Some(r) => {
                    let existing: String = r.get(0);
                    outcome.results[*i] = Ok(Done::Created(
                        existing
                            .parse()
                            .map(Created::Existing)
                            .unwrap_or(Created::New),
                    ));
                }
                None => unresolved.push(*i),
            },
            Op::Reopen(i, id) => {
                if let Some(r) = rows.first() {
                    outcome.reopened.push((*id, r.get(0)));
                    outcome.results[*i] = Ok(Done::Bool(true));
                }
            }
            Op::Prune(i) => {
                let n = rows.first().map_or(0, |r| r.get::<_, i64>(0));
                outcome.results[*i] = Ok(Done::Count(n as u64));
            }
            Op::Plain => {}
        }
    }
    // Keys another runner committed while this batch ran: read them now they are visible.
    for i in unresolved {
        if let Write::Create(run, _) = &batch[i] {
            let row = c
                .query_opt(&s.find_key, &[&run.workflow, &run.idempotency_key])
                .await?;
            let existing = row.and_then(|r| r.get::<_, String>(0).parse().ok());
            outcome.results[i] = Ok(Done::Created(
                existing.map_or(Created::New, Created::Existing),
            ));
        }
    }
    for id in &fenced {
        tracing::warn!(run_id = %id, runner_id = %shared.ownership.runner_id, "another runner took this run over (its lease lapsed here); refusing this runner's write and dropping its copy");
    }
    if !fenced.is_empty() {
        let mut held = shared.held();
        for id in &fenced {
            held.remove(id);
        }
    }
    Ok(outcome)
}

fn parse_status(s: &str) -> RunStatus {
    RunStatus::parse(s).unwrap_or(RunStatus::Running)
}

fn run_row(r: &Row) -> Option<RunRecord> {
    let id: String = r.get(0);
    let status: String = r.get(2);
    let error: Option<String> = r.get(5);
    Some(RunRecord {
        run_id: id.parse().ok()?,
        workflow: r.get(1),
        status: parse_status(&status),
        input: Bytes::from(r.get::<_, Vec<u8>>(3)),
        output: r.get::<_, Option<Vec<u8>>>(4).map(Bytes::from),
        error: error.and_then(|e| serde_json::from_str(&e).ok()),
        idempotency_key: r.get(6),
        created_ms: r.get::<_, i64>(7) as u64,
        finished_ms: r.get::<_, Option<i64>>(8).map(|v| v as u64),
        fingerprint: r.get::<_, Option<i64>>(9).map(|v| Fingerprint(v as u64)),
        forked_from: r.get::<_, Option<String>>(10).and_then(|f| f.parse().ok()),
        due_ms: r.get::<_, Option<i64>>(11).map(|v| v as u64),
        timeline: Vec::new(),
    })
}

fn attempt_row(r: &Row) -> Attempt {
    let status: String = r.get(3);
    let error: Option<String> = r.get(5);
    Attempt {
        step: r.get(1),
        attempt: r.get::<_, i32>(2) as u32,
        status: match status.as_str() {
            "succeeded" => "succeeded",
            "waiting" => "waiting",
            _ => "failed",
        },
        output: r.get::<_, Option<Vec<u8>>>(4).map(Bytes::from),
        error: error.and_then(|e| serde_json::from_str(&e).ok()),
        started_ms: r.get::<_, i64>(6) as u64,
        duration_us: r.get::<_, i64>(7) as u64,
        fingerprint: match (r.get::<_, Option<i64>>(8), r.get::<_, Option<i64>>(9)) {
            (Some(output), Some(place)) => Some(StepPrint {
                output: Fingerprint(output as u64),
                place: Fingerprint(place as u64),
            }),
            _ => None,
        },
    }
}

const TIMELINE: &str =
    "SELECT run_id, step, attempt, status, output, error, started_ms, duration_us, output_fp, place_fp
     FROM nanoflow_journal.steps WHERE run_id = ANY($1) ORDER BY run_id, started_ms, seq, attempt";

/// The runs of `rows`, each with its timeline (one query for all of them).
async fn with_timelines(
    c: &Client,
    s: &Shared,
    rows: Vec<Row>,
) -> Result<Vec<RunRecord>, StoreError> {
    let mut runs: Vec<RunRecord> = rows.iter().filter_map(run_row).collect();
    if runs.is_empty() {
        return Ok(runs);
    }
    let ids: Vec<String> = runs.iter().map(|r| r.run_id.to_string()).collect();
    let steps = c.query(TIMELINE, &[&ids]).await.map_err(|e| s.error(e))?;
    let mut by_run: HashMap<String, Vec<Attempt>> = HashMap::new();
    for row in &steps {
        by_run
            .entry(row.get::<_, String>(0))
            .or_default()
            .push(attempt_row(row));
    }
    for run in &mut runs {
        run.timeline = by_run.remove(&run.run_id.to_string()).unwrap_or_default();
    }
    Ok(runs)
}

async fn get_run(c: &Client, s: &Shared, run_id: RunId) -> Result<Option<RunRecord>, StoreError> {
    let id = run_id.to_string();
    let row = c
        .query_opt(
            &*format!("SELECT {RUN_COLUMNS} FROM nanoflow_journal.runs WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(|e| s.error(e))?;
    match row {
        Some(row) => Ok(with_timelines(c, s, vec![row]).await?.pop()),
        None => Ok(None),
    }
}

async fn list_runs(
    c: &Client,
    s: &Shared,
    filter: &RunFilter,
) -> Result<Vec<RunRecord>, StoreError> {
    let (conditions, mut args) = filter.sql_conditions('$');
    let mut sql = format!("SELECT {RUN_COLUMNS} FROM nanoflow_journal.runs WHERE true{conditions}");
    if let Some(q) = filter.search.as_deref().filter(|q| !q.is_empty()) {
        args.push(q.to_owned());
        let c = args.len();
        let text = format!(
            "strpos(coalesce(idempotency_key, ''), ${c}) > 0 \
             OR strpos(convert_from(input, 'UTF8'), ${c}) > 0 \
             OR strpos(coalesce(error, ''), ${c}) > 0"
        );
        let lower = q.to_ascii_lowercase();
        if lower.len() <= 32 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            // A run id prefix: a range on the primary key (`g` sorts after every hex digit).
            args.push(lower.clone());
            args.push(format!("{lower}g"));
            let (a, b) = (args.len() - 1, args.len());
            sql.push_str(&format!(" AND ((id >= ${a} AND id < ${b}) OR {text})"));
        } else {
            sql.push_str(&format!(" AND ({text})"));
        }
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", filter.limit.max(1)));
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
    let rows = c.query(&*sql, &params).await.map_err(|e| s.error(e))?;
    Ok(rows.iter().filter_map(run_row).collect())
}
