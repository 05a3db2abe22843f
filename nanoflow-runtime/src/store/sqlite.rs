//! The SQLite journal: one file in WAL mode, durable as with `synchronous=FULL`; one writer
//! thread doing group commit, one thread syncing its commits (overlapping the next one's
//! work), one checkpoint thread, and one reader connection for queries.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use axum::body::Bytes;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use std::collections::HashMap;

use super::{
    Attempt, Cancel, Commit, Created, Delivery, FinishWrite, NewRun, QueueSpec, Retention,
    RunFilter, RunRecord, RunStore, StepWrite, StoreError, StoreFuture,
};
use crate::error::Error;
use crate::fingerprint::{Fingerprint, StepPrint};
use crate::id::RunId;
use crate::runs::{now_ms, RunStatus};

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 5;

/// From schema 1 to 2: the workflow's fingerprint on runs, the step's on step records, the run
/// a run was forked from (issue 13). Older records have none, and resume as before.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE runs ADD COLUMN fingerprint INTEGER;
ALTER TABLE runs ADD COLUMN forked_from TEXT;
ALTER TABLE steps ADD COLUMN output_fp INTEGER;
ALTER TABLE steps ADD COLUMN place_fp INTEGER;
";

/// From schema 2 to 3: flow control (issue 15): a queued run's limit key, priority and start
/// time, and when a waiting or queued run is due.
const MIGRATE_2_TO_3: &str = "
ALTER TABLE runs ADD COLUMN limit_key TEXT;
ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN due_ms INTEGER;
ALTER TABLE runs ADD COLUMN started_ms INTEGER;
";

/// From schema 3 to 4: the order in which step records were written, what orders a run's
/// timeline among steps that started within the same millisecond. Older records have none.
const MIGRATE_3_TO_4: &str = "
ALTER TABLE steps ADD COLUMN seq INTEGER;
";

/// From schema 4 to 5: runs are found by status through an index of the runs that have not
/// succeeded, which a run's end leaves; the two indexes of every run by status (one of them
/// by workflow too) took two entries at each run's creation and two more at its end. A list
/// of succeeded runs, most of a journal, reads the runs newest first, or a workflow's from
/// its index; the schema's new index is made by [`SCHEMA`].
const MIGRATE_4_TO_5: &str = "
DROP INDEX IF EXISTS runs_status;
DROP INDEX IF EXISTS runs_workflow_status;
";

/// How long a connection waits for a lock held by another.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the writer's WAL restart waits for a reader to leave the WAL before it gives up
/// until the next commit.
const RESTART_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// The writer connection's page cache, in KiB: the right edges of the tables and indexes it
/// appends to, and their parents. Small on purpose: when a page split reorders pages, SQLite
/// parks a page under the number of its lock page (1 GiB in), and the next commit then walks
/// the cache's whole hash table to drop pages past the end of the database. With 16 MiB that
/// walk was 11 % of the writer's CPU at 256 connections; with 2 MiB it is an eighth of that.
const WRITER_CACHE_KIB: usize = 2048;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;
/// The WAL size past which a checkpoint makes the WAL start over (see the checkpoint thread).
const WAL_RESTART_BYTES: u64 = 4 << 20;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    input BLOB NOT NULL,
    output BLOB,
    error TEXT,
    idempotency_key TEXT,
    created_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    fingerprint INTEGER,
    forked_from TEXT,
    limit_key TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    due_ms INTEGER,
    started_ms INTEGER
);
CREATE INDEX IF NOT EXISTS runs_due ON runs(status, due_ms) WHERE due_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_limited ON runs(workflow, limit_key, status)
    WHERE limit_key IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS runs_idempotency ON runs(workflow, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_not_succeeded ON runs(status, id) WHERE status <> 'succeeded';
CREATE INDEX IF NOT EXISTS runs_workflow ON runs(workflow, id);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    output BLOB,
    error TEXT,
    started_ms INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    output_fp INTEGER,
    place_fp INTEGER,
    seq INTEGER,
    PRIMARY KEY (run_id, step, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    node TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (node, key)
) WITHOUT ROWID;
";

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Write {
    Create(NewRun, Reply<Created>),
    Steps(
        Vec<StepWrite>,
        Option<NewRun>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Finish(
        Vec<StepWrite>,
        FinishWrite,
        Option<NewRun>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Reopen(RunId, Reply<bool>),
    Reset(RunId, Option<Fingerprint>, Reply<bool>),
    Fork(NewRun, RunId, Vec<StepWrite>, Reply<()>),
    Prune(Retention, Reply<u64>),
    Flow(Flow, Reply<FlowDone>),
}

/// The flow-control writes (issue 15), each in the writer's transaction.
enum Flow {
    Deliver(StepWrite),
    Suspend(RunId, String, Option<u64>),
    WakeDue(u64, usize),
    StartQueued(&'static str, QueueSpec, u64, usize),
    Supersede(&'static str, String, RunId),
    Cancel(RunId),
}

/// What a [`Flow`] write found; runs to resume are read after the commit.
enum FlowDone {
    Delivery(Delivery),
    Bool(bool),
    Runs(Vec<RunId>),
    Cancel(Cancel),
}

/// Whether the journal can write: set by the writer thread after each transaction.
#[derive(Debug, Default)]
pub(crate) struct Health {
    failing: AtomicBool,
    reason: Mutex<String>,
}

impl Health {
    fn failed(&self, reason: &str) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_owned();
        self.failing.store(true, Ordering::SeqCst);
    }

    fn succeeded(&self, path: &str) {
        if self.failing.swap(false, Ordering::SeqCst) {
            tracing::info!(journal = path, "journal writes succeed again");
        }
    }

    /// `Err(why)` while the last write failed (and no write succeeded since).
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.failing.load(Ordering::SeqCst) {
            Err(self
                .reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone())
        } else {
            Ok(())
        }
    }
}

/// Logs a failure that repeats (a checkpoint every 250 ms on a full disk) once, then at a
/// falling rate: after 1, 2, 4, ... up to 300 s, with the count of failures in between.
#[derive(Debug, Default)]
struct Repeated {
    failures: u64,
    next_log: Option<std::time::Instant>,
    interval: std::time::Duration,
}

impl Repeated {
    fn failed(&mut self, what: &str, path: &str, error: &dyn std::fmt::Display) {
        self.failures += 1;
        let now = std::time::Instant::now();
        if self.next_log.is_some_and(|t| now < t) {
            return;
        }
        self.interval = (self.interval * 2).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(300),
        );
        self.next_log = Some(now + self.interval);
        tracing::warn!(journal = path, error = %error, failures = self.failures, next_report_in_s = self.interval.as_secs(), "{what} failed");
    }

    fn succeeded(&mut self, what: &str, path: &str) {
        if self.failures > 0 {
            tracing::info!(
                journal = path,
                failures = self.failures,
                "{what} succeeds again"
            );
        }
        *self = Self::default();
    }
}

/// The SQLite store: the embedded default journal, one file.
#[derive(Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// The store's connections and threads, shared with blocking read tasks.
#[derive(Debug)]
struct Inner {
    /// Whether writes succeed now (`GET /readyz`, and new runs are refused while they fail).
    pub(crate) health: Arc<Health>,
    /// The writer thread's queue (a sender is shared by reference: no lock per write).
    writes: mpsc::Sender<ToWriter>,
    reader: Mutex<Connection>,
    path: String,
    stop: Arc<AtomicBool>,
    /// Transactions committed by the writer thread.
    transactions: Arc<AtomicU64>,
    /// The WAL's syncs and their time.
    syncs: Arc<Syncs>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer thread ends when told, after committing what it holds (the sync thread
        // also holds a sender, so the channel does not close); the checkpointer when told.
        let _ = self.writes.send(ToWriter::Stop);
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn journal_error(path: &str, e: impl std::fmt::Display) -> Error {
    Error::Journal(format!("journal `{path}`: {e}"))
}

fn configure(conn: &Connection, path: &str) -> Result<(), Error> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| journal_error(path, e))?;
    // Reading the schema fails here if the file is not a SQLite database.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| journal_error(path, format!("cannot be opened as a journal ({e}); move it away or point `--journal` elsewhere")))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(journal_error(
            path,
            format!("cannot switch to WAL mode (got `{mode}`)"),
        ));
    }
    conn.execute_batch(
        "PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF; PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=-16384;",
    )
        .map_err(|e| journal_error(path, e))?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the SQLite journal at `path`, refusing a corrupt file or one
    /// written by a newer version of nanoflow with a clear message.
    pub fn open(path: &Path) -> Result<Self, Error> {
        Ok(Self {
            inner: Arc::new(Inner::open(path)?),
        })
    }

    /// Runs `read` on the reader connection on a blocking thread.
    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Inner) -> Result<T, Error> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || read(&inner))
                .await
                .map_err(|e| StoreError::Unavailable(format!("journal read task failed: {e}")))?
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        })
    }
}

impl SqliteStore {
    async fn flow(&self, op: Flow) -> Result<FlowDone, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner.send(Write::Flow(op, tx));
        self.inner.wait(rx).await.map_err(unavailable)
    }

    /// The runs `ids` with their timelines, in that order.
    async fn whole_runs(&self, ids: Vec<RunId>) -> Result<Vec<RunRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.read(move |inner| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.extend(inner.get_run(id)?);
            }
            Ok(out)
        })
        .await
    }
}

impl RunStore for SqliteStore {
    fn create_run(&self, run: NewRun) -> StoreFuture<'_, Created> {
        Box::pin(async move { self.inner.create_run(run).await.map_err(unavailable) })
    }

    fn record_step(&self, write: StepWrite, create: Option<NewRun>) -> Commit {
        let (tx, commit) = Commit::channel();
        self.inner.send(Write::Steps(vec![write], create, tx));
        commit
    }

    fn record_steps(&self, writes: Vec<StepWrite>, create: Option<NewRun>) -> Commit {
        let (tx, commit) = Commit::channel();
        self.inner.send(Write::Steps(writes, create, tx));
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
        self.inner.send(Write::Finish(steps, write, create, tx));
        commit
    }

    fn reopen(&self, run_id: RunId) -> StoreFuture<'_, bool> {
        Box::pin(async move { self.inner.reopen(run_id).await.map_err(unavailable) })
    }

    fn fork(&self, run: NewRun, from: RunId, steps: Vec<StepWrite>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.inner.send(Write::Fork(run, from, steps, tx));
            self.inner.wait(rx).await.map_err(unavailable)
        })
    }

    fn reset(&self, run_id: RunId, fingerprint: Option<Fingerprint>) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.inner.send(Write::Reset(run_id, fingerprint, tx));
            self.inner.wait(rx).await.map_err(unavailable)
        })
    }

    fn prune(&self, retention: Retention) -> StoreFuture<'_, u64> {
        Box::pin(async move { self.inner.prune(retention).await.map_err(unavailable) })
    }

    fn get_run(&self, run_id: RunId) -> StoreFuture<'_, Option<RunRecord>> {
        self.read(move |inner| inner.get_run(run_id))
    }

    fn list_runs(&self, filter: RunFilter) -> StoreFuture<'_, Vec<RunRecord>> {
        self.read(move |inner| inner.list_runs(&filter))
    }

    fn unfinished_runs(&self) -> StoreFuture<'_, Vec<RunRecord>> {
        self.read(Inner::unfinished_runs)
    }

    fn find_keys(
        &self,
        workflow: &'static str,
        keys: Vec<String>,
    ) -> StoreFuture<'_, Vec<(String, RunId)>> {
        self.read(move |inner| inner.find_keys(workflow, keys))
    }

    fn get_state(&self, node: &'static str, key: String) -> StoreFuture<'_, Option<Bytes>> {
        self.read(move |inner| inner.get_state(node, &key))
    }

    fn deliver(&self, write: StepWrite) -> StoreFuture<'_, Delivery> {
        Box::pin(async move {
            match self.flow(Flow::Deliver(write)).await? {
                FlowDone::Delivery(Delivery::Woken(run)) => {
                    let run_id = run.run_id;
                    Ok(match self.whole_runs(vec![run_id]).await?.pop() {
                        Some(run) => Delivery::Woken(Box::new(run)),
                        None => Delivery::UnknownRun,
                    })
                }
                FlowDone::Delivery(d) => Ok(d),
                _ => Err(StoreError::Unavailable("unexpected reply".into())),
            }
        })
    }

    fn suspend(&self, run_id: RunId, step: String, due_ms: Option<u64>) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            match self.flow(Flow::Suspend(run_id, step, due_ms)).await? {
                FlowDone::Bool(b) => Ok(b),
                _ => Ok(false),
            }
        })
    }

    fn wake_due(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<RunRecord>> {
        Box::pin(async move {
            match self.flow(Flow::WakeDue(now_ms, limit)).await? {
                FlowDone::Runs(ids) => self.whole_runs(ids).await,
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
        Box::pin(async move {
            match self
                .flow(Flow::StartQueued(workflow, spec, now_ms, limit))
                .await?
            {
                FlowDone::Runs(ids) => self.whole_runs(ids).await,
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
        Box::pin(async move {
            match self.flow(Flow::Supersede(workflow, key, keep)).await? {
                FlowDone::Runs(ids) => Ok(ids),
                _ => Ok(Vec::new()),
            }
        })
    }

    fn cancel(&self, run_id: RunId) -> StoreFuture<'_, Cancel> {
        Box::pin(async move {
            match self.flow(Flow::Cancel(run_id)).await? {
                FlowDone::Cancel(Cancel::Woken(run)) => {
                    Ok(match self.whole_runs(vec![run.run_id]).await?.pop() {
                        Some(run) => Cancel::Woken(Box::new(run)),
                        None => Cancel::UnknownRun,
                    })
                }
                FlowDone::Cancel(c) => Ok(c),
                _ => Ok(Cancel::UnknownRun),
            }
        })
    }

    fn health(&self) -> Result<(), StoreError> {
        self.inner.health.check().map_err(StoreError::Unavailable)
    }

    fn transactions(&self) -> u64 {
        self.inner.transactions.load(Ordering::Relaxed)
    }

    fn syncs(&self) -> (u64, std::time::Duration) {
        self.inner.syncs.get()
    }

    fn durable(&self) -> bool {
        true
    }
}

fn unavailable(e: Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl Inner {
    fn open(path: &Path) -> Result<Self, Error> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                journal_error(
                    &shown,
                    format!("cannot create directory `{}`: {e}", dir.display()),
                )
            })?;
        }
        let writer = Connection::open(path).map_err(|e| journal_error(&shown, e))?;
        configure(&writer, &shown)?;
        let version: i64 = writer
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| journal_error(&shown, e))?;
        if version > SCHEMA_VERSION {
            return Err(journal_error(
                &shown,
                format!("was written by a newer nanoflow (schema {version}, this build reads up to {SCHEMA_VERSION}); upgrade nanoflow or use another journal file"),
            ));
        }
        // Version 0 is a new file; later versions migrate here, step by step.
        let migrate = match version {
            1 => format!("{MIGRATE_1_TO_2} {MIGRATE_2_TO_3} {MIGRATE_3_TO_4} {MIGRATE_4_TO_5}"),
            2 => format!("{MIGRATE_2_TO_3} {MIGRATE_3_TO_4} {MIGRATE_4_TO_5}"),
            3 => format!("{MIGRATE_3_TO_4} {MIGRATE_4_TO_5}"),
            4 => MIGRATE_4_TO_5.to_owned(),
            _ => String::new(),
        };
        writer
            .execute_batch(&format!(
                "BEGIN; {migrate} {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(|e| journal_error(&shown, format!("cannot write the schema: {e}")))?;
        let integrity: String = writer
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(|e| journal_error(&shown, e))?;
        if integrity != "ok" {
            return Err(journal_error(
                &shown,
                format!("is corrupt ({integrity}); restore a backup or move it away"),
            ));
        }
        let reader = Connection::open(path).map_err(|e| journal_error(&shown, e))?;
        configure(&reader, &shown)?;

        // Checkpoints run on their own connection and thread, so the writer never stalls on
        // copying the WAL back into the database (automatic checkpoints are off above).
        let checkpointer = Connection::open(path).map_err(|e| journal_error(&shown, e))?;
        configure(&checkpointer, &shown)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let checkpoint_path = shown.clone();
        let wal_path = {
            let mut p = path.as_os_str().to_owned();
            p.push("-wal");
            std::path::PathBuf::from(p)
        };
        let writer_wal = wal_path;
        let page_size: i64 = checkpointer
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| journal_error(&shown, e))?;
        let restart_frames = (WAL_RESTART_BYTES as i64 / page_size.max(512)).max(1);
        // Set by the checkpoint thread, taken by the writer (see below).
        let restart = Arc::new(AtomicBool::new(false));
        let restart_wanted = restart.clone();
        std::thread::Builder::new()
            .name("nanoflow-checkpoint".into())
            .spawn(move || {
                let mut failing = Repeated::default();
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(250));
                    // A passive checkpoint never makes the writer wait, but under steady
                    // writes the WAL is never copied back whole, so it is never started over:
                    // it grows without end, and every commit appends, which makes each sync
                    // also write the file's size. Past `WAL_RESTART_BYTES` in the WAL, the
                    // writer is asked to make the WAL start over: it holds a transaction open
                    // for as long as it has writes to apply, so a restart from this thread
                    // would wait for a moment without one, which steady load never gives.
                    let passive =
                        checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                            r.get::<_, i64>(1)
                        });
                    match passive {
                        Ok(frames) => {
                            failing.succeeded("journal checkpoint", &checkpoint_path);
                            if frames > restart_frames {
                                restart_wanted.store(true, Ordering::Relaxed);
                            }
                        }
                        Err(e) => failing.failed("journal checkpoint", &checkpoint_path, &e),
                    }
                }
            })
            .map_err(|e| {
                journal_error(&shown, format!("cannot start the checkpoint thread: {e}"))
            })?;
        // The writer commits with `synchronous=NORMAL` (SQLite writes the WAL without syncing
        // it) and makes each commit durable itself with `fdatasync` on the WAL before anyone
        // is told: SQLite's bundled build syncs with `fsync`, which also flushes the file's
        // times, a second journal write of the filesystem at every commit.
        writer
            .execute_batch(&format!(
                "PRAGMA synchronous=NORMAL; PRAGMA cache_size=-{WRITER_CACHE_KIB};"
            ))
            .map_err(|e| journal_error(&shown, e))?;
        let syncs = Arc::new(Syncs::default());
        let wal = WalSync::new(writer_wal.clone(), syncs.clone());
        let (tx, rx) = mpsc::channel();
        let thread_path = shown.clone();
        let transactions = Arc::new(AtomicU64::new(0));
        let thread_transactions = transactions.clone();
        let health = Arc::new(Health::default());
        let thread_health = health.clone();
        // The sync thread makes committed batches durable while the writer goes on with the
        // next one (see `sync_loop`).
        let (synced_tx, synced_rx) = mpsc::channel();
        let answered = Arc::new(AtomicU64::new(0));
        let sync_answered = answered.clone();
        let sync_path = shown.clone();
        let sync_health = health.clone();
        let sync_wal = WalSync::new(writer_wal, syncs.clone());
        let to_writer = tx.clone();
        std::thread::Builder::new()
            .name("nanoflow-journal-sync".into())
            .spawn(move || {
                sync_loop(
                    sync_wal,
                    synced_rx,
                    to_writer,
                    &sync_answered,
                    &sync_path,
                    &sync_health,
                )
            })
            .map_err(|e| journal_error(&shown, format!("cannot start the sync thread: {e}")))?;
        std::thread::Builder::new()
            .name("nanoflow-journal".into())
            .spawn(move || {
                writer_loop(
                    writer,
                    wal,
                    rx,
                    synced_tx,
                    &answered,
                    &restart,
                    &thread_path,
                    &thread_transactions,
                    &thread_health,
                )
            })
            .map_err(|e| journal_error(&shown, format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            health,
            writes: tx,
            reader: Mutex::new(reader),
            path: shown,
            stop,
            transactions,
            syncs,
        })
    }

    fn send(&self, write: Write) {
        // If the writer thread is gone, the reply sender is dropped with the message and the
        // caller sees a closed channel, reported as a journal error.
        let _ = self.writes.send(ToWriter::Write(write));
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn create_run(&self, run: NewRun) -> Result<Created, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Write::Create(run, tx));
        self.wait(rx).await
    }

    async fn reopen(&self, run_id: RunId) -> Result<bool, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Write::Reopen(run_id, tx));
        self.wait(rx).await
    }

    async fn prune(&self, retention: Retention) -> Result<u64, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Write::Prune(retention, tx));
        self.wait(rx).await
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<Result<T, String>>) -> Result<T, Error> {
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(journal_error(&self.path, e)),
            Err(_) => Err(journal_error(&self.path, "the writer thread stopped")),
        }
    }

    fn get_run(&self, run_id: RunId) -> Result<Option<RunRecord>, Error> {
        let conn = self.reader();
        let id = run_id.to_string();
        let run = conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                [&id],
                run_row,
            )
            .optional()
            .map_err(|e| journal_error(&self.path, e))?;
        let Some(mut run) = run else { return Ok(None) };
        run.timeline = timeline(&conn, &id).map_err(|e| journal_error(&self.path, e))?;
        Ok(Some(run))
    }

    fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, Error> {
        let conn = self.reader();
        let (sql, args) = list_sql(filter);
        let mut stmt = conn
            .prepare_cached(&sql)
            .map_err(|e| journal_error(&self.path, e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), run_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| journal_error(&self.path, e))?;
        Ok(rows)
    }

    fn unfinished_runs(&self) -> Result<Vec<RunRecord>, Error> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(&unfinished_sql())
            .map_err(|e| journal_error(&self.path, e))?;
        let mut runs = stmt
            .query_map([], run_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| journal_error(&self.path, e))?;
        for run in &mut runs {
            run.timeline = timeline(&conn, &run.run_id.to_string())
                .map_err(|e| journal_error(&self.path, e))?;
        }
        Ok(runs)
    }

    fn find_keys(&self, workflow: &str, keys: Vec<String>) -> Result<Vec<(String, RunId)>, Error> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached("SELECT id FROM runs WHERE workflow = ?1 AND idempotency_key = ?2")
            .map_err(|e| journal_error(&self.path, e))?;
        let mut found = Vec::new();
        for key in keys {
            let id: Option<String> = stmt
                .query_row(params![workflow, key], |r| r.get(0))
                .optional()
                .map_err(|e| journal_error(&self.path, e))?;
            if let Some(run) = id.and_then(|id| id.parse().ok()) {
                found.push((key, run));
            }
        }
        Ok(found)
    }

    fn get_state(&self, node: &str, key: &str) -> Result<Option<Bytes>, Error> {
        let conn = self.reader();
        conn.query_row(
            "SELECT value FROM state WHERE node = ?1 AND key = ?2",
            params![node, key],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .optional()
        .map(|v| v.map(Bytes::from))
        .map_err(|e| journal_error(&self.path, e))
    }
}

const RUN_COLUMNS: &str = "id, workflow, status, input, output, error, idempotency_key, created_ms, finished_ms, fingerprint, forked_from, due_ms";

fn parse_status(s: &str) -> RunStatus {
    RunStatus::parse(s).unwrap_or(RunStatus::Running)
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let id: String = r.get(0)?;
    let status: String = r.get(2)?;
    let error: Option<String> = r.get(5)?;
    Ok(RunRecord {
        run_id: id.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?,
        workflow: r.get(1)?,
        status: parse_status(&status),
        input: Bytes::from(r.get::<_, Vec<u8>>(3)?),
        output: r.get::<_, Option<Vec<u8>>>(4)?.map(Bytes::from),
        error: error.and_then(|e| serde_json::from_str(&e).ok()),
        idempotency_key: r.get(6)?,
        created_ms: r.get::<_, i64>(7)? as u64,
        finished_ms: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        fingerprint: r.get::<_, Option<i64>>(9)?.map(from_sql_fp),
        forked_from: r.get::<_, Option<String>>(10)?.and_then(|f| f.parse().ok()),
        due_ms: r.get::<_, Option<i64>>(11)?.map(|v| v as u64),
        timeline: Vec::new(),
    })
}

fn timeline(conn: &Connection, id: &str) -> rusqlite::Result<Vec<Attempt>> {
    let mut stmt = conn.prepare_cached(
        "SELECT step, attempt, status, output, error, started_ms, duration_us, output_fp, place_fp FROM steps
         WHERE run_id = ?1 ORDER BY started_ms, seq, attempt",
    )?;
    let rows = stmt.query_map([id], |r| {
        let status: String = r.get(2)?;
        let error: Option<String> = r.get(4)?;
        Ok(Attempt {
            step: r.get(0)?,
            attempt: r.get::<_, i64>(1)? as u32,
            status: match status.as_str() {
                "succeeded" => "succeeded",
                "waiting" => "waiting",
                _ => "failed",
            },
            output: r.get::<_, Option<Vec<u8>>>(3)?.map(Bytes::from),
            error: error.and_then(|e| serde_json::from_str(&e).ok()),
            started_ms: r.get::<_, i64>(5)? as u64,
            duration_us: r.get::<_, i64>(6)? as u64,
            fingerprint: match (r.get::<_, Option<i64>>(7)?, r.get::<_, Option<i64>>(8)?) {
                (Some(output), Some(place)) => Some(StepPrint {
                    output: from_sql_fp(output),
                    place: from_sql_fp(place),
                }),
                _ => None,
            },
        })
    })?;
    rows.collect()
}

/// How often a failing journal is probed with a write of its own, so that recovery (space
/// freed on a full disk) is noticed without a run risking its steps on it.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// How many times the WAL was synced, and how long those syncs took in all: what the disk
/// costs each commit (`GET /metrics`, and the durability bench's floor of a run's latency).
#[derive(Debug, Default)]
struct Syncs {
    count: AtomicU64,
    nanos: AtomicU64,
}

impl Syncs {
    fn add(&self, took: std::time::Duration) {
        self.nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> (u64, std::time::Duration) {
        (
            self.count.load(Ordering::Relaxed),
            std::time::Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        )
    }
}

/// `fdatasync` of the WAL file: what makes a commit durable (see `Inner::open`).
struct WalSync {
    path: std::path::PathBuf,
    file: Option<(std::fs::File, u64)>,
    syncs: Arc<Syncs>,
}

impl WalSync {
    fn new(path: std::path::PathBuf, syncs: Arc<Syncs>) -> Self {
        Self {
            path,
            file: None,
            syncs,
        }
    }

    /// Syncs what SQLite wrote to the WAL so far. Reopens the file when it is not the one
    /// open (a WAL deleted and made again), so that the sync always reaches the live file.
    fn sync(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let live = std::fs::metadata(&self.path)?.ino();
        if self.file.as_ref().is_none_or(|(_, ino)| *ino != live) {
            let file = std::fs::File::open(&self.path)?;
            let ino = file.metadata()?.ino();
            self.file = Some((file, ino));
        }
        match &self.file {
            Some((file, _)) => {
                let started = std::time::Instant::now();
                let synced = file.sync_data();
                if synced.is_ok() {
                    self.syncs.add(started.elapsed());
                }
                synced
            }
            None => Ok(()),
        }
    }

    /// [`WalSync::sync`] as a SQLite error.
    fn sync_sqlite(&mut self) -> rusqlite::Result<()> {
        self.sync().map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
                Some(format!("syncing the journal's WAL: {e}")),
            )
        })
    }
}

/// What the writer thread is sent. A write goes by value, as it did before the other two
/// messages were added: boxing it would allocate once per write.
#[allow(clippy::large_enum_variant)]
enum ToWriter {
    /// A write to apply.
    Write(Write),
    /// The sync thread finished a sync: the writer may commit what it applied meanwhile.
    Synced,
    /// The store is dropped: commit what is applied, and end.
    Stop,
}

/// A committed transaction on its way to the sync thread: its writes and what each produced.
struct Committed(Vec<(Write, Outcome)>);

/// Makes committed transactions durable and answers their callers. Each `fdatasync` covers
/// every transaction committed before it started. Transactions are answered in the order they
/// were committed, and one committed after another is durable only with it: the WAL's frames
/// are checksummed in a chain, so recovery after a crash keeps a prefix of the commits.
/// `answered` counts the transactions answered, for the writer (see `writer_loop`).
fn sync_loop(
    mut wal: WalSync,
    rx: mpsc::Receiver<Committed>,
    writer: mpsc::Sender<ToWriter>,
    answered: &AtomicU64,
    path: &str,
    health: &Health,
) {
    let mut failing = Repeated::default();
    let mut group = Vec::new();
    while let Ok(first) = rx.recv() {
        group.push(first);
        while let Ok(more) = rx.try_recv() {
            group.push(more);
        }
        let synced = wal.sync_sqlite();
        // The writer commits what it applied during this sync before the callers below are
        // answered.
        let _ = writer.send(ToWriter::Synced);
        let count = group.len() as u64;
        answer(
            group.drain(..).flat_map(|c| c.0),
            synced,
            path,
            health,
            &mut failing,
        );
        answered.fetch_add(count, Ordering::Release);
    }
}

/// Answers the writes of transactions whose sync returned `synced`.
fn answer(
    writes: impl Iterator<Item = (Write, Outcome)>,
    synced: rusqlite::Result<()>,
    path: &str,
    health: &Health,
    failing: &mut Repeated,
) {
    match synced {
        Ok(()) => {
            failing.succeeded("journal write", path);
            health.succeeded(path);
            for (write, result) in writes {
                reply(write, Ok(result));
            }
        }
        // Committed but not durable: the writes are in the file, so they are not retried;
        // every caller is told they failed, and the journal is unhealthy until a write syncs.
        Err(e) => {
            let why = e.to_string();
            failing.failed("journal write", path, &e);
            health.failed(&why);
            for (write, _) in writes {
                reply(write, Err(why.clone()));
            }
        }
    }
}

/// The writer thread: applies writes as they come into one open transaction, and commits it
/// when the sync thread is free, which then makes it durable while the next transaction fills.
/// So a commit's SQLite work overlaps the previous commit's `fdatasync`, and there is one
/// commit per sync: each commit rewrites the pages it touched in the WAL, so fewer, larger
/// commits write less. A commit of one write that finds no other waiting and the sync thread
/// done with every earlier commit is synced and answered here: with nothing to overlap, the
/// hand-off to the other thread would only add its wake-up to the commit (one client's run
/// makes three such commits). A larger commit is always handed over: syncing it here made the
/// journaled queue trigger, whose commits hold about fifty writes, 8 % slower.
#[allow(clippy::too_many_arguments)]
fn writer_loop(
    conn: Connection,
    mut wal: WalSync,
    rx: mpsc::Receiver<ToWriter>,
    synced: mpsc::Sender<Committed>,
    answered: &AtomicU64,
    restart: &AtomicBool,
    path: &str,
    transactions: &AtomicU64,
    health: &Health,
) {
    let mut failing = Repeated::default();
    let mut checkpoints = Repeated::default();
    // Transactions handed to the sync thread (it counts those it answered in `answered`).
    let mut handed: u64 = 0;
    // A message taken from the queue to see whether it was empty, handled next.
    let mut pending: Option<ToWriter> = None;
    // The writes applied in the open transaction, each with what it produced.
    let mut open: Vec<(Write, Outcome)> = Vec::new();
    // Whether a committed transaction is being synced.
    let mut syncing = false;
    let mut statements = Statements::new(&conn);
    let mut stopping = false;
    loop {
        if !open.is_empty() && (!syncing || stopping || open.len() >= MAX_BATCH) {
            match conn.execute_batch("COMMIT") {
                Ok(()) => {
                    transactions.fetch_add(1, Ordering::Relaxed);
                    failing.succeeded("journal write", path);
                    // One write, the sync thread idle, none waiting: a lone client. (A commit
                    // of many writes goes to the sync thread even then, since load is high
                    // enough to bring more while it syncs; the queue is looked at only for a
                    // commit of one.)
                    let mut alone =
                        !stopping && open.len() == 1 && answered.load(Ordering::Acquire) == handed;
                    if alone {
                        match rx.try_recv() {
                            Err(mpsc::TryRecvError::Empty) => {}
                            Err(mpsc::TryRecvError::Disconnected) => alone = false,
                            Ok(message) => {
                                pending = Some(message);
                                alone = false;
                            }
                        }
                    }
                    if alone {
                        // Nothing to overlap with the sync: sync and answer here, in commit
                        // order still (the sync thread has answered every earlier commit).
                        let synced = wal.sync_sqlite();
                        answer(open.drain(..), synced, path, health, &mut failing);
                    } else {
                        // The sync thread ends only after this one: it cannot refuse the
                        // batch.
                        // The next transaction is about as large: sized for it, its writes
                        // are not moved again as the list grows.
                        let next = Vec::with_capacity(open.len());
                        let _ = synced.send(Committed(std::mem::replace(&mut open, next)));
                        handed += 1;
                        syncing = true;
                    }
                    // Between two transactions, when the checkpoint thread asks: copy what is
                    // left of the WAL into the database and make the next commit start the WAL
                    // over (a pause of the writer of about one checkpoint; the commit just
                    // made is synced by this checkpoint too).
                    if restart.swap(false, Ordering::Relaxed) {
                        // A reader on the WAL makes it wait: briefly, not the 5 s that writes
                        // wait for a lock.
                        let _ = conn.busy_timeout(RESTART_WAIT);
                        let done = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                            r.get::<_, i64>(0)
                        });
                        let _ = conn.busy_timeout(BUSY_TIMEOUT);
                        match done {
                            // Busy: a reader was still on the WAL; ask again at the next
                            // commit.
                            Ok(busy) => {
                                checkpoints.succeeded("journal checkpoint", path);
                                if busy != 0 {
                                    restart.store(true, Ordering::Relaxed);
                                }
                            }
                            Err(e) => checkpoints.failed("journal checkpoint", path, &e),
                        }
                    }
                }
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    one_by_one(
                        &mut statements,
                        &mut wal,
                        open.drain(..).map(|(write, _)| write).collect(),
                        e,
                        path,
                        transactions,
                        health,
                        &mut failing,
                    );
                }
            }
        }
        if stopping {
            break;
        }
        let message = if let Some(message) = pending.take() {
            message
        } else if open.is_empty() && !syncing && health.check().is_err() {
            match rx.recv_timeout(PROBE_EVERY) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    probe(&conn, &mut wal, path, health, &mut failing);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            }
        };
        let mut next = Some(message);
        while let Some(message) = next {
            match message {
                ToWriter::Synced => syncing = false,
                ToWriter::Stop => stopping = true,
                ToWriter::Write(write) => {
                    let applied = if open.is_empty() {
                        conn.execute_batch("BEGIN IMMEDIATE")
                            .and_then(|()| apply(&mut statements, &write))
                    } else {
                        apply(&mut statements, &write)
                    };
                    match applied {
                        Ok(result) => open.push((write, result)),
                        // One write failed: roll the transaction back, and apply each write
                        // in its own transaction so that only the failing ones fail.
                        Err(e) => {
                            if !conn.is_autocommit() {
                                let _ = conn.execute_batch("ROLLBACK");
                            }
                            let mut batch: Vec<Write> =
                                open.drain(..).map(|(write, _)| write).collect();
                            batch.push(write);
                            one_by_one(
                                &mut statements,
                                &mut wal,
                                batch,
                                e,
                                path,
                                transactions,
                                health,
                                &mut failing,
                            );
                        }
                    }
                }
            }
            next = if open.len() < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
    }
}

/// While the journal fails: a write transaction that changes nothing but must reach the disk.
fn probe(
    conn: &Connection,
    wal: &mut WalSync,
    path: &str,
    health: &Health,
    failing: &mut Repeated,
) {
    let probe = conn
        .execute_batch(&format!(
            "BEGIN IMMEDIATE; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .and_then(|()| wal.sync_sqlite());
    match probe {
        Ok(()) => {
            failing.succeeded("journal write", path);
            health.succeeded(path);
        }
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            failing.failed("journal write", path, &e);
            health.failed(&e.to_string());
        }
    }
}

/// Applies each write of a transaction that failed in its own transaction, synced here (which
/// also makes every transaction committed before it durable), so that only the failing writes
/// fail.
#[allow(clippy::too_many_arguments)]
fn one_by_one(
    statements: &mut Statements<'_>,
    wal: &mut WalSync,
    batch: Vec<Write>,
    first_error: rusqlite::Error,
    path: &str,
    transactions: &AtomicU64,
    health: &Health,
    failing: &mut Repeated,
) {
    tracing::debug!(journal = path, error = %first_error, "journal batch failed; retrying its writes one by one");
    let mut any_ok = false;
    let mut last_error = None;
    let conn = statements.conn;
    for write in batch {
        let result = (|| {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let r =
                apply(statements, &write).and_then(|r| conn.execute_batch("COMMIT").map(|()| r));
            if r.is_err() && !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            let r = r?;
            wal.sync_sqlite()?;
            Ok::<_, rusqlite::Error>(r)
        })();
        match &result {
            Ok(_) => {
                any_ok = true;
                transactions.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => last_error = Some(e.to_string()),
        }
        reply(write, result.map_err(|e| e.to_string()));
    }
    match last_error {
        // Some writes fail on their own (a constraint), others succeed: the journal itself is
        // fine.
        Some(e) if !any_ok => {
            failing.failed("journal write", path, &e);
            health.failed(&e);
        }
        Some(e) => tracing::error!(journal = path, error = %e, "journal write failed"),
        None => {
            failing.succeeded("journal write", path);
            health.succeeded(path);
        }
    }
}

/// The writer's connection with the statements of every run's records, each prepared once
/// (when first used) and kept. From rusqlite's statement cache each write paid a hash of the
/// statement's text and two moves in the cache's list (issue 16).
struct Statements<'c> {
    conn: &'c Connection,
    insert_run: Option<rusqlite::Statement<'c>>,
    insert_step: Option<rusqlite::Statement<'c>>,
    finish_run: Option<rusqlite::Statement<'c>>,
}

impl<'c> Statements<'c> {
    fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            insert_run: None,
            insert_step: None,
            finish_run: None,
        }
    }

    /// The statement kept in `slot`, prepared from `sql` the first time.
    fn held<'s>(
        conn: &'c Connection,
        slot: &'s mut Option<rusqlite::Statement<'c>>,
        sql: &str,
    ) -> rusqlite::Result<&'s mut rusqlite::Statement<'c>> {
        match slot {
            Some(statement) => Ok(statement),
            None => Ok(slot.insert(conn.prepare(sql)?)),
        }
    }
}

/// What a write produced, before the reply is typed.
enum Outcome {
    Created(Created),
    /// A record's claim found its key held by this other run: nothing was applied.
    Taken(RunId),
    Unit,
    Bool(bool),
    Count(u64),
    Flow(FlowDone),
}

fn reply(write: Write, result: Result<Outcome, String>) {
    match write {
        Write::Create(_, tx) => {
            let _ = tx.send(result.map(|o| match o {
                Outcome::Created(c) => c,
                _ => Created::New,
            }));
        }
        Write::Steps(_, _, tx) | Write::Finish(_, _, _, tx) => {
            let _ = tx.send(match result {
                Ok(Outcome::Taken(holder)) => Err(StoreError::KeyTaken(holder)),
                Ok(_) => Ok(()),
                Err(e) => Err(StoreError::Unavailable(e)),
            });
        }
        Write::Fork(_, _, _, tx) => {
            let _ = tx.send(result.map(|_| ()));
        }
        Write::Reopen(_, tx) | Write::Reset(_, _, tx) => {
            let _ = tx.send(result.map(|o| matches!(o, Outcome::Bool(true))));
        }
        Write::Prune(_, tx) => {
            let _ = tx.send(result.map(|o| match o {
                Outcome::Count(n) => n,
                _ => 0,
            }));
        }
        Write::Flow(_, tx) => {
            let _ = tx.send(result.and_then(|o| match o {
                Outcome::Flow(done) => Ok(done),
                _ => Err("unexpected outcome".into()),
            }));
        }
    }
}

/// Applies one write inside the batch's transaction.
fn apply(s: &mut Statements<'_>, write: &Write) -> rusqlite::Result<Outcome> {
    let c = s.conn;
    match write {
        Write::Create(run, _) => {
            if let Some(key) = &run.idempotency_key {
                let existing: Option<String> = c
                    .prepare_cached(
                        "SELECT id FROM runs WHERE workflow = ?1 AND idempotency_key = ?2",
                    )?
                    .query_row(params![run.workflow, key], |r| r.get(0))
                    .optional()?;
                if let Some(id) = existing {
                    return Ok(Outcome::Created(
                        id.parse().map(Created::Existing).unwrap_or(Created::New),
                    ));
                }
            }
            insert_run(s, run)?;
            Ok(Outcome::Created(Created::New))
        }
        Write::Steps(steps, create, _) => {
            if let Some(holder) = claim(s, create.as_ref())? {
                return Ok(Outcome::Taken(holder));
            }
            for step in steps {
                insert_step(s, step)?;
            }
            Ok(Outcome::Unit)
        }
        Write::Fork(run, from, steps, _) => {
            insert_run(s, run)?;
            c.prepare_cached("UPDATE runs SET forked_from = ?2 WHERE id = ?1")?
                .execute(params![run.run_id.to_string(), from.to_string()])?;
            for step in steps {
                insert_step(s, step)?;
            }
            Ok(Outcome::Unit)
        }
        Write::Finish(steps, finish, create, _) => {
            if let Some(holder) = claim(s, create.as_ref())? {
                return Ok(Outcome::Taken(holder));
            }
            for step in steps {
                insert_step(s, step)?;
            }
            finish_run(s, finish)?;
            Ok(Outcome::Unit)
        }
        Write::Reopen(run_id, _) => {
            let n = c
                .prepare_cached(
                    "UPDATE runs SET status = 'running', error = NULL, finished_ms = NULL
                     WHERE id = ?1 AND status IN ('failed', 'blocked')",
                )?
                .execute([run_id.to_string()])?;
            Ok(Outcome::Bool(n == 1))
        }
        Write::Reset(run_id, fingerprint, _) => {
            let id = run_id.to_string();
            let n = c
                .prepare_cached(
                    "UPDATE runs SET status = 'running', error = NULL, output = NULL,
                     finished_ms = NULL, fingerprint = ?2
                     WHERE id = ?1 AND status IN ('failed', 'blocked')",
                )?
                .execute(params![id, fingerprint.map(to_sql_fp)])?;
            if n == 1 {
                c.prepare_cached("DELETE FROM steps WHERE run_id = ?1")?
                    .execute([&id])?;
            }
            Ok(Outcome::Bool(n == 1))
        }
        Write::Prune(retention, _) => prune(c, retention),
        Write::Flow(op, _) => flow(s, op).map(Outcome::Flow),
    }
}

/// A run's status, if it exists.
fn status_of(c: &Connection, id: &str) -> rusqlite::Result<Option<RunStatus>> {
    c.prepare_cached("SELECT status FROM runs WHERE id = ?1")?
        .query_row([id], |r| r.get::<_, String>(0))
        .optional()
        .map(|s| s.map(|s| parse_status(&s)))
}

/// A placeholder record of a run to resume: the caller reads it whole after the commit.
fn placeholder(run_id: RunId) -> RunRecord {
    RunRecord {
        run_id,
        workflow: String::new(),
        status: RunStatus::Running,
        input: Bytes::new(),
        output: None,
        error: None,
        idempotency_key: None,
        created_ms: 0,
        finished_ms: None,
        fingerprint: None,
        forked_from: None,
        due_ms: None,
        timeline: Vec::new(),
    }
}

fn has_value(c: &Connection, id: &str, step: &str) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "SELECT 1 FROM steps WHERE run_id = ?1 AND step = ?2 AND status = 'succeeded' LIMIT 1",
    )?
    .query_row(params![id, step], |_| Ok(()))
    .optional()
    .map(|r| r.is_some())
}

fn end_cancelled(c: &Connection, id: &str, error: &crate::runs::RunError) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE runs SET status = 'cancelled', error = ?2, finished_ms = ?3, due_ms = NULL WHERE id = ?1",
    )?
    .execute(params![id, serde_json::to_string(error).ok(), now_ms() as i64])?;
    Ok(())
}

fn flow(s: &mut Statements<'_>, op: &Flow) -> rusqlite::Result<FlowDone> {
    let c = s.conn;
    match op {
        Flow::Deliver(write) => {
            let id = write.run_id.to_string();
            let delivery = match status_of(c, &id)? {
                None => Delivery::UnknownRun,
                Some(s) if s.is_finished() || s == RunStatus::Blocked => Delivery::Finished(s),
                Some(_) if has_value(c, &id, &write.step)? => Delivery::AlreadyDelivered,
                Some(status) => {
                    insert_step(s, write)?;
                    if status == RunStatus::Waiting {
                        c.prepare_cached(
                            "UPDATE runs SET status = 'running', due_ms = NULL WHERE id = ?1",
                        )?
                        .execute([&id])?;
                        Delivery::Woken(Box::new(placeholder(write.run_id)))
                    } else {
                        Delivery::Kept
                    }
                }
            };
            Ok(FlowDone::Delivery(delivery))
        }
        Flow::Suspend(run_id, step, due) => {
            let id = run_id.to_string();
            if has_value(c, &id, step)? {
                return Ok(FlowDone::Bool(false));
            }
            let n = c
                .prepare_cached(
                    "UPDATE runs SET status = 'waiting', due_ms = ?2 WHERE id = ?1 AND status = 'running'",
                )?
                .execute(params![id, due.map(|d| d as i64)])?;
            Ok(FlowDone::Bool(n == 1))
        }
        Flow::WakeDue(now, limit) => {
            let ids: Vec<String> = c
                .prepare_cached(
                    "SELECT id FROM runs WHERE status = 'waiting' AND due_ms <= ?1 ORDER BY due_ms LIMIT ?2",
                )?
                .query_map(params![*now as i64, *limit as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut woken = Vec::new();
            for id in ids {
                c.prepare_cached(
                    "UPDATE runs SET status = 'running', due_ms = NULL WHERE id = ?1",
                )?
                .execute([&id])?;
                woken.extend(id.parse::<RunId>().ok());
            }
            Ok(FlowDone::Runs(woken))
        }
        Flow::StartQueued(workflow, spec, now, limit) => {
            start_queued(c, workflow, spec, *now, *limit).map(FlowDone::Runs)
        }
        Flow::Supersede(workflow, key, keep) => {
            let ids: Vec<String> = c
                .prepare_cached(
                    "SELECT id FROM runs WHERE workflow = ?1 AND limit_key = ?2 AND status = 'queued' AND id != ?3",
                )?
                .query_map(params![workflow, key, keep.to_string()], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let error = crate::runs::RunError::debounced(*keep);
            for id in &ids {
                end_cancelled(c, id, &error)?;
            }
            Ok(FlowDone::Runs(
                ids.iter().filter_map(|i| i.parse().ok()).collect(),
            ))
        }
        Flow::Cancel(run_id) => {
            let id = run_id.to_string();
            let outcome = match status_of(c, &id)? {
                None => Cancel::UnknownRun,
                Some(s) if s.is_finished() => Cancel::Finished(s),
                Some(RunStatus::Queued | RunStatus::Blocked) => {
                    end_cancelled(c, &id, &crate::runs::RunError::cancelled())?;
                    Cancel::Ended
                }
                Some(RunStatus::Waiting) => {
                    c.prepare_cached(
                        "UPDATE runs SET status = 'running', due_ms = NULL WHERE id = ?1",
                    )?
                    .execute([&id])?;
                    Cancel::Woken(Box::new(placeholder(*run_id)))
                }
                Some(_) => Cancel::Running,
            };
            Ok(FlowDone::Cancel(outcome))
        }
    }
}

/// See [`RunStore::start_queued`]: one key's slots and recent starts counted as it goes.
fn start_queued(
    c: &Connection,
    workflow: &str,
    spec: &QueueSpec,
    now: u64,
    limit: usize,
) -> rusqlite::Result<Vec<RunId>> {
    let queued: Vec<(RunId, String, Option<u64>)> = c
        .prepare_cached(QUEUED_SQL)?
        .query_map([workflow], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?
        .filter_map(|row| match row {
            Ok((id, key, due)) => id
                .parse()
                .ok()
                .map(|id| Ok((id, key, due.map(|d| d as u64)))),
            Err(e) => Some(Err(e)),
        })
        .collect::<rusqlite::Result<_>>()?;
    let since = spec
        .rate
        .map_or(i64::MAX, |(_, per)| now.saturating_sub(per) as i64);
    let counts: HashMap<String, (u64, u64)> = c
        .prepare_cached(
            "SELECT limit_key,
                    sum(status IN ('running', 'waiting')),
                    sum(coalesce(started_ms > ?2, 0))
             FROM runs
             WHERE workflow = ?1 AND limit_key IS NOT NULL
               AND (status IN ('running', 'waiting') OR started_ms > ?2)
             GROUP BY limit_key",
        )?
        .query_map(params![workflow, since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let started = super::runs_to_start(queued, counts, *spec, now, limit);
    for id in &started {
        c.prepare_cached(
            "UPDATE runs SET status = 'running', due_ms = NULL, started_ms = ?2 WHERE id = ?1",
        )?
        .execute(params![id.to_string(), now as i64])?;
    }
    Ok(started)
}

/// The runs that have not ended, oldest first (the redundant condition lets SQLite read them
/// from the index of the runs that have not succeeded).
fn unfinished_sql() -> String {
    format!("SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' AND status <> 'succeeded' ORDER BY id")
}

/// A limited workflow's queued runs, in the order they may start.
const QUEUED_SQL: &str = "SELECT id, limit_key, due_ms FROM runs
    WHERE workflow = ?1 AND status = 'queued' AND status <> 'succeeded'
    ORDER BY priority DESC, id LIMIT 10000";

/// The statement listing the runs `filter` asks for, and its arguments.
fn list_sql(filter: &RunFilter) -> (String, Vec<String>) {
    let (conditions, mut args) = filter.sql_conditions('?');
    let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1=1{conditions}");
    if let Some(q) = filter.search.as_deref().filter(|q| !q.is_empty()) {
        let lower = q.to_ascii_lowercase();
        if lower.len() <= 32 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            // A run id prefix: a range on the primary key (`g` sorts after every hex digit).
            args.push(lower.clone());
            args.push(format!("{lower}g"));
            let (a, b) = (args.len() - 1, args.len());
            args.push(q.to_owned());
            let c = args.len();
            sql.push_str(&format!(
                " AND ((id >= ?{a} AND id < ?{b}) OR instr(idempotency_key, ?{c}) > 0 \
                 OR instr(CAST(input AS TEXT), ?{c}) > 0 OR instr(error, ?{c}) > 0)"
            ));
        } else {
            args.push(q.to_owned());
            let c = args.len();
            sql.push_str(&format!(
                " AND (instr(idempotency_key, ?{c}) > 0 OR instr(CAST(input AS TEXT), ?{c}) > 0 \
                 OR instr(error, ?{c}) > 0)"
            ));
        }
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", filter.limit.max(1)));
    (sql, args)
}

/// One attempt of one step (and the node's state with it).
fn insert_step(s: &mut Statements<'_>, step: &StepWrite) -> rusqlite::Result<()> {
    let (status, output, error) = match &step.outcome {
        Ok(out) if step.attempt == super::WAIT_ATTEMPT => ("waiting", Some(out.as_ref()), None),
        Ok(out) => ("succeeded", Some(out.as_ref()), None),
        Err(e) => ("failed", None, Some(e.to_string())),
    };
    let c = s.conn;
    Statements::held(
        c,
        &mut s.insert_step,
        "INSERT OR REPLACE INTO steps (run_id, step, attempt, status, output, error, started_ms, duration_us, output_fp, place_fp, seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        step.run_id.hex().as_str(),
        step.step,
        step.attempt,
        status,
        output,
        error,
        step.started_ms as i64,
        step.duration_us as i64,
        step.fingerprint.map(|f| to_sql_fp(f.output)),
        step.fingerprint.map(|f| to_sql_fp(f.place)),
        super::next_step_seq(),
    ])?;
    if let Some((node, key, value)) = &step.state {
        c.prepare_cached("INSERT OR REPLACE INTO state (node, key, value) VALUES (?1, ?2, ?3)")?
            .execute(params![node, key, value.as_ref()])?;
    }
    Ok(())
}

/// A run's end, and the runs it chains.
fn finish_run(s: &mut Statements<'_>, finish: &FinishWrite) -> rusqlite::Result<()> {
    let (status, output, error) = match &finish.outcome {
        Ok(out) => ("succeeded", Some(out.as_ref()), None),
        Err(e) => (e.status().as_str(), None, serde_json::to_string(e).ok()),
    };
    let c = s.conn;
    Statements::held(
        c,
        &mut s.finish_run,
        "UPDATE runs SET status = ?2, output = ?3, error = ?4, finished_ms = ?5, due_ms = NULL WHERE id = ?1",
    )?
    .execute(params![
        finish.run_id.hex().as_str(),
        status,
        output,
        error,
        now_ms() as i64
    ])?;
    for run in &finish.chained {
        insert_run(s, run)?;
    }
    Ok(())
}

fn prune(c: &Connection, retention: &Retention) -> rusqlite::Result<Outcome> {
    let cutoff = now_ms().saturating_sub(retention.max_age.as_millis() as u64) as i64;
    // Runs past the age limit, then runs beyond the newest `max_runs` finished ones.
    let doomed = "SELECT id FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_ms < ?1
                  UNION SELECT id FROM (SELECT id FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled')
                                        ORDER BY id DESC LIMIT -1 OFFSET ?2)";
    let keep = retention.max_runs.min(i64::MAX as u64) as i64;
    c.execute(
        &format!("DELETE FROM steps WHERE run_id IN ({doomed})"),
        params![cutoff, keep],
    )?;
    let removed = c.execute(
        &format!("DELETE FROM runs WHERE id IN ({doomed})"),
        params![cutoff, keep],
    )?;
    Ok(Outcome::Count(removed as u64))
}

/// A fingerprint as an SQLite integer (its 64 bits, as signed): no text formatted per write.
fn to_sql_fp(f: Fingerprint) -> i64 {
    f.0 as i64
}

fn from_sql_fp(v: i64) -> Fingerprint {
    Fingerprint(v as u64)
}

/// Inserts the run that travels with a record. A keyed one is a claim: `Some(holder)` when
/// another run holds its key (nothing inserted); inserted before by an earlier record of the
/// same run, it is left as it is.
fn claim(s: &mut Statements<'_>, create: Option<&NewRun>) -> rusqlite::Result<Option<RunId>> {
    let Some(run) = create else { return Ok(None) };
    // The common case costs the insert alone: the key's index refuses a taken key.
    if insert_run(s, run)? {
        return Ok(None);
    }
    let Some(key) = &run.idempotency_key else {
        return Ok(None);
    };
    let holder: Option<String> = s
        .conn
        .prepare_cached("SELECT id FROM runs WHERE workflow = ?1 AND idempotency_key = ?2")?
        .query_row(params![run.workflow, key], |r| r.get(0))
        .optional()?;
    Ok(holder
        .and_then(|id| id.parse::<RunId>().ok())
        .filter(|id| *id != run.run_id))
}

/// Inserts a run unless its id or its workflow and key exist; whether it did.
fn insert_run(s: &mut Statements<'_>, run: &NewRun) -> rusqlite::Result<bool> {
    let c = s.conn;
    let inserted = match &run.queued {
        None => Statements::held(
            c,
            &mut s.insert_run,
            "INSERT OR IGNORE INTO runs (id, workflow, status, input, idempotency_key, created_ms, fingerprint)
                 VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
                run.run_id.hex().as_str(),
                run.workflow,
                run.input.as_ref(),
                run.idempotency_key,
                now_ms() as i64,
                run.fingerprint.map(to_sql_fp),
            ])?,
        Some(q) => c
            .prepare_cached(
                "INSERT OR IGNORE INTO runs (id, workflow, status, input, idempotency_key, created_ms, fingerprint, limit_key, priority, due_ms)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                run.run_id.to_string(),
                run.workflow,
                run.input.as_ref(),
                run.idempotency_key,
                now_ms() as i64,
                run.fingerprint.map(to_sql_fp),
                q.key,
                q.priority,
                q.due_ms as i64,
            ])?,
    };
    Ok(inserted == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes sent together are applied in one open transaction. One that fails there (a
    /// trigger refuses its step, as a constraint would) fails alone: the transaction is rolled
    /// back and its writes applied one by one, so the writes before and after it in the same
    /// transaction are answered, durable and readable, and the journal stays healthy.
    #[tokio::test]
    async fn a_failing_write_fails_alone_among_the_writes_it_was_applied_with() {
        let dir = std::env::temp_dir().join(format!("nanoflow-sqlite-{}", RunId::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.db");
        let store = SqliteStore::open(&path).unwrap();
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON steps WHEN NEW.step = 'refused'
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
            )
            .unwrap();
        let before = store.inner.transactions.load(Ordering::Relaxed);
        // Sent before any is awaited: the writer finds them queued together.
        let commits: Vec<_> = (0..64)
            .map(|n| {
                let run_id = RunId::new();
                let step = StepWrite {
                    run_id,
                    step: if n % 8 == 3 { "refused" } else { "price" }.into(),
                    attempt: 1,
                    outcome: Ok(Bytes::from_static(b"1")),
                    started_ms: now_ms(),
                    duration_us: 5,
                    state: None,
                    fingerprint: None,
                };
                let run = NewRun {
                    run_id,
                    workflow: "checkout",
                    input: Bytes::from_static(b"{}"),
                    idempotency_key: None,
                    fingerprint: None,
                    queued: None,
                };
                (n, run_id, store.record_step(step, Some(run)))
            })
            .collect();
        for (n, run_id, commit) in commits {
            let answer = commit.await;
            let run = store.get_run(run_id).await.unwrap();
            if n % 8 == 3 {
                let e = answer.expect_err("the refused step's write fails");
                assert!(format!("{e:?}").contains("refused by the test"), "{e:?}");
                assert!(run.is_none(), "the refused write's run was not recorded");
            } else {
                answer.unwrap();
                let run = run.expect("an answered write's run is in the journal");
                assert_eq!(run.timeline.len(), 1);
                assert_eq!(run.timeline[0].step, "price");
            }
        }
        assert!(store.inner.health.check().is_ok());
        // Fewer transactions than writes: the writes were applied together, and the failures
        // took only the writes of their own transaction one by one.
        let transactions = store.inner.transactions.load(Ordering::Relaxed) - before;
        assert!(transactions < 64, "{transactions} transactions");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// SQLite's plan for `sql`, one line per step.
    fn plan(c: &Connection, sql: &str) -> String {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    /// The statuses that are rare (not `succeeded`) are read from their partial index, alone
    /// or with a workflow, and so are the unfinished and queued runs: a journal of a million
    /// succeeded runs lists its few failed ones without reading the others.
    #[test]
    fn rare_statuses_are_read_from_their_index() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        for status in [RunStatus::Failed, RunStatus::Running, RunStatus::Waiting] {
            for workflow in [None, Some("checkout".to_owned())] {
                let filter = RunFilter {
                    status: Some(status),
                    workflow: workflow.clone(),
                    limit: 50,
                    ..RunFilter::default()
                };
                let (sql, args) = list_sql(&filter);
                // The arguments are the workflow's name only: bind it as text in the plan.
                let sql = args.iter().enumerate().fold(sql, |sql, (i, a)| {
                    sql.replace(&format!("?{}", i + 1), &format!("'{a}'"))
                });
                let plan = plan(&c, &sql);
                if workflow.is_none() {
                    assert!(plan.contains("runs_not_succeeded"), "{sql}\n{plan}");
                } else {
                    assert!(plan.contains("USING INDEX"), "{sql}\n{plan}");
                }
                assert!(
                    !plan.contains("SCAN runs\n") && plan != "SCAN runs",
                    "{sql}\n{plan}"
                );
            }
        }
        let queued = QUEUED_SQL.replace("?1", "'checkout'");
        let p = plan(&c, &queued);
        assert!(
            p.contains("runs_not_succeeded") || p.contains("runs_limited"),
            "{p}"
        );
        assert!(plan(&c, &unfinished_sql()).contains("runs_not_succeeded"));
    }
}
