//! The journal: every accepted run and every node result, recorded durably before it is
//! acknowledged, so a crashed runner resumes each run after its last completed node.
//!
//! The embedded default is a SQLite file in WAL mode with `synchronous=FULL` (see [`sqlite`]).
//! Writes from all concurrent runs go through one writer thread that commits them in batches
//! (group commit): one fsync covers every write that arrived while the previous commit ran.

pub mod sqlite;

use std::sync::Arc;

use axum::body::Bytes;
use serde::Serialize;

use crate::error::Error;
use crate::run::RunId;
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
}

/// Filters for [`Journal::list_runs`].
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

/// A step result to record.
#[derive(Debug, Clone)]
pub(crate) struct StepWrite {
    pub(crate) run_id: RunId,
    /// The step's scoped name (`score[17]`, `payment_flow/charge`).
    pub(crate) step: std::borrow::Cow<'static, str>,
    pub(crate) attempt: u32,
    pub(crate) outcome: Result<Bytes, serde_json::Value>,
    pub(crate) started_ms: u64,
    pub(crate) duration_us: u64,
    /// A stateful node's new state for its key, written in the same transaction.
    pub(crate) state: Option<(&'static str, String, Bytes)>,
}

/// The finish of a run.
#[derive(Debug, Clone)]
pub(crate) struct FinishWrite {
    pub(crate) run_id: RunId,
    pub(crate) outcome: Result<Bytes, RunError>,
    /// Runs started by this one's success (`#[trigger(after = ...)]`), recorded with it.
    pub(crate) chained: Vec<NewRun>,
}

/// The journal a runner writes to. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    pub(crate) store: Arc<sqlite::SqliteStore>,
}

impl Journal {
    /// Opens (creating if needed) the SQLite journal at `path`, refusing a corrupt file or one
    /// written by a newer version of nanoflow with a clear message.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        Ok(Self {
            store: Arc::new(sqlite::SqliteStore::open(path.as_ref())?),
        })
    }

    /// Records a new run durably (before it is acknowledged).
    pub async fn create_run(&self, run: NewRun) -> Result<Created, Error> {
        self.store.create_run(run).await
    }

    /// A run with its per-step timeline.
    pub async fn get_run(&self, run_id: RunId) -> Result<Option<RunRecord>, Error> {
        let store = self.store.clone();
        blocking(move || store.get_run(run_id)).await
    }

    /// Runs, newest first.
    pub async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>, Error> {
        let store = self.store.clone();
        blocking(move || store.list_runs(&filter)).await
    }

    /// Every run not finished (with its timeline), oldest first: what a restart resumes.
    pub async fn unfinished_runs(&self) -> Result<Vec<RunRecord>, Error> {
        let store = self.store.clone();
        blocking(move || store.unfinished_runs()).await
    }

    /// Marks a failed run as running again, for a re-drive from its failed node. Returns the
    /// run, or `None` when there is no such failed run.
    pub async fn reopen(&self, run_id: RunId) -> Result<Option<RunRecord>, Error> {
        if !self.store.reopen(run_id).await? {
            return Ok(None);
        }
        self.get_run(run_id).await
    }

    /// Deletes finished runs beyond the retention policy; returns how many.
    pub async fn prune(&self, retention: Retention) -> Result<u64, Error> {
        self.store.prune(retention).await
    }

    /// Reads a stateful node's value for `key`.
    pub async fn get_state(&self, node: &'static str, key: String) -> Result<Option<Bytes>, Error> {
        let store = self.store.clone();
        blocking(move || store.get_state(node, &key)).await
    }

    pub(crate) fn record_step(
        &self,
        write: StepWrite,
        create: Option<NewRun>,
    ) -> tokio::sync::oneshot::Receiver<Result<(), String>> {
        self.store.record_step(write, create)
    }

    /// `Err(why)` while writes fail (a full disk, an I/O error); `Ok` once one succeeds again.
    /// New runs are refused meanwhile, and `GET /readyz` reports it.
    pub fn health(&self) -> Result<(), String> {
        self.store.health.check()
    }

    /// The journal's commit latency and write counts, for `GET /metrics`.
    pub(crate) fn metrics(&self) -> &crate::observability::metrics::JournalMetrics {
        &self.store.metrics
    }

    pub(crate) fn finish(
        &self,
        write: FinishWrite,
        create: Option<NewRun>,
    ) -> tokio::sync::oneshot::Receiver<Result<(), String>> {
        self.store.finish(write, create)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Journal(format!("journal read task failed: {e}")))?
}
