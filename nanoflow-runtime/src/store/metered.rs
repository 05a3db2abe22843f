//! Measuring any [`RunStore`] from outside: how many writes are issued, how long each awaited
//! one takes to become durable, and how many fail. The figures `GET /metrics` serves as the journal's, the
//! same for every store; the store itself knows nothing of metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;

use super::{
    Commit, Created, FinishWrite, NewRun, Retention, RunFilter, RunRecord, RunStore, StepWrite,
    StoreError, StoreFuture,
};
use crate::fingerprint::Fingerprint;
use crate::id::RunId;
use crate::stats::JournalMetrics;

/// `inner`, with its writes measured.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn RunStore>,
    metrics: Arc<JournalMetrics>,
}

impl Metered {
    /// Measures the writes of `inner`.
    pub fn new(inner: Arc<dyn RunStore>) -> Self {
        Self {
            inner,
            metrics: Arc::default(),
        }
    }

    pub(crate) fn metrics(&self) -> Arc<JournalMetrics> {
        self.metrics.clone()
    }
}

impl RunStore for Metered {
    fn create_run(&self, run: NewRun) -> StoreFuture<'_, Created> {
        let issued = Instant::now();
        self.metrics.writes.inc();
        let write = self.inner.create_run(run);
        Box::pin(async move {
            let result = write.await;
            match &result {
                Ok(_) => self.metrics.commit.observe(issued.elapsed()),
                Err(_) => self.metrics.failed_writes.inc(),
            }
            result
        })
    }

    fn record_step(&self, write: StepWrite, create: Option<NewRun>) -> Commit {
        self.metrics.writes.inc();
        self.inner
            .record_step(write, create)
            .metered(self.metrics.clone())
    }

    fn finish(&self, write: FinishWrite, create: Option<NewRun>) -> Commit {
        self.metrics.writes.inc();
        self.inner
            .finish(write, create)
            .metered(self.metrics.clone())
    }

    fn record_steps(&self, writes: Vec<StepWrite>, create: Option<NewRun>) -> Commit {
        self.metrics.writes.inc();
        self.inner
            .record_steps(writes, create)
            .metered(self.metrics.clone())
    }

    fn finish_with_steps(
        &self,
        steps: Vec<StepWrite>,
        write: FinishWrite,
        create: Option<NewRun>,
    ) -> Commit {
        self.metrics.writes.inc();
        self.inner
            .finish_with_steps(steps, write, create)
            .metered(self.metrics.clone())
    }

    fn reopen(&self, run_id: RunId) -> StoreFuture<'_, bool> {
        self.metrics.writes.inc();
        self.inner.reopen(run_id)
    }

    fn reset(&self, run_id: RunId, fingerprint: Option<Fingerprint>) -> StoreFuture<'_, bool> {
        self.inner.reset(run_id, fingerprint)
    }

    fn fork(&self, run: NewRun, from: RunId, steps: Vec<StepWrite>) -> StoreFuture<'_, ()> {
        self.metrics.writes.inc();
        self.inner.fork(run, from, steps)
    }

    fn prune(&self, retention: Retention) -> StoreFuture<'_, u64> {
        self.metrics.writes.inc();
        self.inner.prune(retention)
    }

    fn get_run(&self, run_id: RunId) -> StoreFuture<'_, Option<RunRecord>> {
        self.inner.get_run(run_id)
    }

    fn list_runs(&self, filter: RunFilter) -> StoreFuture<'_, Vec<RunRecord>> {
        self.inner.list_runs(filter)
    }

    fn unfinished_runs(&self) -> StoreFuture<'_, Vec<RunRecord>> {
        self.inner.unfinished_runs()
    }

    fn find_keys(
        &self,
        workflow: &'static str,
        keys: Vec<String>,
    ) -> StoreFuture<'_, Vec<(String, RunId)>> {
        self.inner.find_keys(workflow, keys)
    }

    fn get_state(&self, node: &'static str, key: String) -> StoreFuture<'_, Option<Bytes>> {
        self.inner.get_state(node, key)
    }

    fn health(&self) -> Result<(), StoreError> {
        self.inner.health()
    }

    fn durable(&self) -> bool {
        self.inner.durable()
    }

    fn transactions(&self) -> u64 {
        self.inner.transactions()
    }

    fn syncs(&self) -> (u64, std::time::Duration) {
        self.inner.syncs()
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    fn claim_orphans(&self, limit: usize) -> StoreFuture<'_, Vec<RunRecord>> {
        self.inner.claim_orphans(limit)
    }

    fn owns(&self, run_id: RunId) -> bool {
        self.inner.owns(run_id)
    }

    fn backlog(&self) -> StoreFuture<'_, Option<super::Backlog>> {
        self.inner.backlog()
    }

    fn lock_key(&self, node: &'static str, key: String) -> StoreFuture<'_, ()> {
        self.inner.lock_key(node, key)
    }

    fn deliver(&self, write: StepWrite) -> StoreFuture<'_, super::Delivery> {
        self.metrics.writes.inc();
        self.inner.deliver(write)
    }

    fn suspend(&self, run_id: RunId, step: String, due_ms: Option<u64>) -> StoreFuture<'_, bool> {
        self.metrics.writes.inc();
        self.inner.suspend(run_id, step, due_ms)
    }

    fn wake_due(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<RunRecord>> {
        self.inner.wake_due(now_ms, limit)
    }

    fn start_queued(
        &self,
        workflow: &'static str,
        spec: super::QueueSpec,
        now_ms: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<RunRecord>> {
        self.inner.start_queued(workflow, spec, now_ms, limit)
    }

    fn supersede(
        &self,
        workflow: &'static str,
        key: String,
        keep: RunId,
    ) -> StoreFuture<'_, Vec<RunId>> {
        self.metrics.writes.inc();
        self.inner.supersede(workflow, key, keep)
    }

    fn cancel(&self, run_id: RunId) -> StoreFuture<'_, super::Cancel> {
        self.metrics.writes.inc();
        self.inner.cancel(run_id)
    }

    fn unlock_key(&self, node: &'static str, key: String) -> StoreFuture<'_, ()> {
        self.inner.unlock_key(node, key)
    }
}
