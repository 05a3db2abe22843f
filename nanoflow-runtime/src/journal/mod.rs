//! The journal: every accepted run and every node result, recorded durably before it is
//! acknowledged, so a crashed runner resumes each run after its last completed node.
//!
//! [`Journal`] is the runner's handle on a [`RunStore`]: the embedded
//! default is a SQLite file in WAL mode with `synchronous=FULL` ([`sqlite`]), whose writes from
//! all concurrent runs go through one writer thread committing them in batches (group commit).

pub use crate::store::sqlite;
pub use crate::store::{
    Attempt, Created, FinishWrite, NewRun, Retention, RunFilter, RunRecord, RunStore, StepWrite,
    StoreError,
};

use std::sync::Arc;

use axum::body::Bytes;

use crate::error::Error;
use crate::id::RunId;
use crate::store::Commit;

/// The journal a runner writes to: a shared [`RunStore`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    store: Arc<dyn RunStore>,
    metrics: Option<Arc<crate::stats::JournalMetrics>>,
}

impl Journal {
    /// Opens (creating if needed) the SQLite journal at `path`, refusing a corrupt file or one
    /// written by a newer version of nanoflow with a clear message.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        Ok(Self::metered(sqlite::SqliteStore::open(path.as_ref())?))
    }

    /// Opens the journal `journal` names: a PostgreSQL database shared with other runners
    /// (`postgres://user@host:port/db`, needs the `postgres` feature; `runner_id` and `lease`
    /// say who this runner is and how long its lease lasts, `None` for the defaults) or else a
    /// SQLite file.
    pub fn open_with(
        journal: impl AsRef<std::path::Path>,
        runner_id: Option<&str>,
        lease: Option<std::time::Duration>,
    ) -> Result<Self, Error> {
        let text = journal.as_ref().to_string_lossy();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Self::open(journal);
        }
        #[cfg(feature = "postgres")]
        {
            let mut ownership = crate::store::postgres::Ownership::default();
            if let Some(id) = runner_id {
                ownership.runner_id = id.to_owned();
            }
            if let Some(lease) = lease {
                ownership.lease = lease;
            }
            let store = crate::store::postgres::PostgresStore::open(&text, ownership)?;
            Ok(Self::metered(store))
        }
        #[cfg(not(feature = "postgres"))]
        {
            let _ = (runner_id, lease);
            Err(Error::Config(format!(
                "the journal `{}` is a PostgreSQL database: build nanoflow with its `postgres` feature",
                crate::store::redact_url(&text)
            )))
        }
    }

    /// A journal on `store`.
    pub fn new(store: impl RunStore) -> Self {
        Self {
            store: Arc::new(store),
            metrics: None,
        }
    }

    /// A journal on `store`, its writes measured for `GET /metrics`.
    pub fn metered(store: impl RunStore) -> Self {
        let metered = crate::store::metered::Metered::new(Arc::new(store));
        let metrics = Some(metered.metrics());
        Self {
            store: Arc::new(metered),
            metrics,
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &dyn RunStore {
        &*self.store
    }

    /// Records a new run durably (before it is acknowledged).
    pub async fn create_run(&self, run: NewRun) -> Result<Created, Error> {
        Ok(self.store.create_run(run).await?)
    }

    /// A run with its per-step timeline.
    pub async fn get_run(&self, run_id: RunId) -> Result<Option<RunRecord>, Error> {
        Ok(self.store.get_run(run_id).await?)
    }

    /// Runs, newest first.
    pub async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>, Error> {
        Ok(self.store.list_runs(filter).await?)
    }

    /// Every run not finished (with its timeline), oldest first: what a restart resumes.
    pub async fn unfinished_runs(&self) -> Result<Vec<RunRecord>, Error> {
        Ok(self.store.unfinished_runs().await?)
    }

    /// Marks a failed run as running again, for a re-drive from its failed node. Returns the
    /// run, or `None` when there is no such failed run.
    pub async fn reopen(&self, run_id: RunId) -> Result<Option<RunRecord>, Error> {
        if !self.store.reopen(run_id).await? {
            return Ok(None);
        }
        self.get_run(run_id).await
    }

    /// Marks a failed or blocked run as running again with none of its step records (a retry
    /// from the start), started now by the graph of `fingerprint`. `false` when there is no
    /// such run.
    pub async fn reset(
        &self,
        run_id: RunId,
        fingerprint: Option<crate::fingerprint::Fingerprint>,
    ) -> Result<bool, Error> {
        Ok(self.store.reset(run_id, fingerprint).await?)
    }

    /// Records a run forked from `from` with the step records it reuses, atomically.
    pub async fn fork(&self, run: NewRun, from: RunId, steps: Vec<StepWrite>) -> Result<(), Error> {
        Ok(self.store.fork(run, from, steps).await?)
    }

    /// Deletes finished runs beyond the retention policy; returns how many.
    pub async fn prune(&self, retention: Retention) -> Result<u64, Error> {
        Ok(self.store.prune(retention).await?)
    }

    /// The runs of `workflow` that hold any of `keys` (see [`RunStore::find_keys`]).
    pub async fn find_keys(
        &self,
        workflow: &'static str,
        keys: Vec<String>,
    ) -> Result<Vec<(String, RunId)>, Error> {
        Ok(self.store.find_keys(workflow, keys).await?)
    }

    /// Reads a stateful node's value for `key`.
    pub async fn get_state(&self, node: &'static str, key: String) -> Result<Option<Bytes>, Error> {
        Ok(self.store.get_state(node, key).await?)
    }

    /// `Err(why)` while writes fail (a full disk, an I/O error); `Ok` once one succeeds again.
    /// New runs are refused meanwhile, and `GET /readyz` reports it.
    pub fn health(&self) -> Result<(), String> {
        self.store.health().map_err(|e| e.to_string())
    }

    pub(crate) fn record_step(&self, write: StepWrite, create: Option<NewRun>) -> Commit {
        self.store.record_step(write, create)
    }

    /// The journal's commit latency and write counts, for `GET /metrics`.
    pub(crate) fn metrics(&self) -> Option<&crate::stats::JournalMetrics> {
        self.metrics.as_deref()
    }

    /// Transactions the store committed since it opened.
    pub fn transactions(&self) -> u64 {
        self.store.transactions()
    }

    /// The store's own syncs of its commits to the disk, and their time in all.
    pub fn syncs(&self) -> (u64, std::time::Duration) {
        self.store.syncs()
    }

    pub(crate) fn finish(&self, write: FinishWrite, create: Option<NewRun>) -> Commit {
        self.store.finish(write, create)
    }

    pub(crate) fn record_steps(&self, writes: Vec<StepWrite>, create: Option<NewRun>) -> Commit {
        self.store.record_steps(writes, create)
    }

    pub(crate) fn finish_with_steps(
        &self,
        steps: Vec<StepWrite>,
        write: FinishWrite,
        create: Option<NewRun>,
    ) -> Commit {
        self.store.finish_with_steps(steps, write, create)
    }
}
