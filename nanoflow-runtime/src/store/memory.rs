//! A [`RunStore`] in memory: every guarantee of the contract but durability across processes.
//! The reference implementation the conformance suite is written against, a store for tests,
//! and the store of a runner started with `--journal off` ([`MemoryStore::bounded`]: the most
//! recent finished runs are kept, running runs always).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use axum::body::Bytes;

use super::{
    Attempt, Cancel, Commit, Created, Delivery, FinishWrite, NewRun, QueueSpec, Retention,
    RunFilter, RunRecord, RunStore, StepWrite, StoreError, StoreFuture,
};
use crate::fingerprint::Fingerprint;
use crate::id::RunId;
use crate::runs::{now_ms, RunStatus};

/// A run's attempts by step and attempt number, each with the order it was written in
/// ([`super::next_step_seq`]).
type Attempts = BTreeMap<(String, u32), (i64, Attempt)>;

/// Runs kept in memory, in one lock: each write is applied whole, as a transaction would be.
#[derive(Debug, Default)]
pub struct MemoryStore {
    data: Mutex<Data>,
    /// At most this many finished runs are kept (the oldest finished go first); `None`: all.
    keep_finished: Option<usize>,
}

#[derive(Debug, Default)]
struct Data {
    /// Runs by id; ids sort by creation time.
    runs: BTreeMap<RunId, RunRecord>,
    /// `(workflow, idempotency key)` -> run.
    keys: HashMap<(String, String), RunId>,
    /// A run's attempts by `(step, attempt)`: a repeated record replaces the earlier one.
    steps: HashMap<RunId, Attempts>,
    state: HashMap<(&'static str, String), Bytes>,
    /// Finished runs in the order they finished (only for a bounded store).
    finished: VecDeque<RunId>,
    /// Runs of limited workflows: their key, priority and start time (`None` while queued).
    limited: HashMap<RunId, Limited>,
}

#[derive(Debug, Clone)]
struct Limited {
    key: String,
    priority: i64,
    started_ms: Option<u64>,
}

impl MemoryStore {
    /// An empty store that keeps every run until it is pruned.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that keeps at most `keep_finished` finished runs (the oldest finished are
    /// forgotten first, with their idempotency keys); running runs are always kept.
    pub fn bounded(keep_finished: usize) -> Self {
        Self {
            data: Mutex::default(),
            keep_finished: Some(keep_finished),
        }
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Data {
    /// Records a run unless its id, or its workflow and idempotency key, exist already.
    fn insert(&mut self, run: &NewRun) -> Created {
        if let Some(key) = &run.idempotency_key {
            if let Some(existing) = self.keys.get(&(run.workflow.to_owned(), key.clone())) {
                return Created::Existing(*existing);
            }
        }
        if self.runs.contains_key(&run.run_id) {
            return Created::New;
        }
        if let Some(key) = &run.idempotency_key {
            self.keys
                .insert((run.workflow.to_owned(), key.clone()), run.run_id);
        }
        if let Some(q) = &run.queued {
            self.limited.insert(
                run.run_id,
                Limited {
                    key: q.key.clone(),
                    priority: q.priority,
                    started_ms: None,
                },
            );
        }
        self.runs.insert(
            run.run_id,
            RunRecord {
                run_id: run.run_id,
                workflow: run.workflow.to_owned(),
                status: if run.queued.is_some() {
                    RunStatus::Queued
                } else {
                    RunStatus::Running
                },
                input: run.input.clone(),
                output: None,
                error: None,
                idempotency_key: run.idempotency_key.clone(),
                created_ms: now_ms(),
                finished_ms: None,
                fingerprint: run.fingerprint,
                forked_from: None,
                due_ms: run.queued.as_ref().map(|q| q.due_ms),
                timeline: Vec::new(),
            },
        );
        Created::New
    }

    /// Applies the creation that travels with a record; `Err(KeyTaken)` when it claims a key
    /// another run holds (nothing applied).
    fn create_with(&mut self, create: Option<&NewRun>) -> Result<(), StoreError> {
        match create.map(|run| (run.run_id, self.insert(run))) {
            Some((run_id, Created::Existing(holder))) if holder != run_id => {
                Err(StoreError::KeyTaken(holder))
            }
            _ => Ok(()),
        }
    }

    /// Records a run's end (a bounded store forgets its oldest finished runs), and the runs it
    /// chains.
    fn finish(&mut self, write: FinishWrite, keep_finished: Option<usize>) {
        if let Some(run) = self.runs.get_mut(&write.run_id) {
            match write.outcome {
                Ok(output) => {
                    run.status = RunStatus::Succeeded;
                    run.output = Some(output);
                    run.error = None;
                }
                Err(e) => {
                    run.status = e.status();
                    run.output = None;
                    run.error = serde_json::to_value(e).ok();
                }
            }
            run.finished_ms = Some(now_ms());
            run.due_ms = None;
            if let Some(keep) = keep_finished {
                self.finished.push_back(write.run_id);
                while self.finished.len() > keep {
                    match self.finished.pop_front() {
                        // A re-driven run finishes twice: only a finished one is forgotten.
                        Some(old)
                            if self.runs.get(&old).is_some_and(|r| r.finished_ms.is_some()) =>
                        {
                            self.remove(old)
                        }
                        _ => {}
                    }
                }
            }
        }
        for chained in &write.chained {
            self.insert(chained);
        }
    }

    /// The run with its timeline.
    fn whole(&self, run_id: RunId) -> Option<RunRecord> {
        self.runs.get(&run_id).cloned().map(|mut r| {
            r.timeline = self.timeline(run_id);
            r
        })
    }

    /// Whether step `step` of the run has its value.
    fn has_value(&self, run_id: RunId, step: &str) -> bool {
        self.steps.get(&run_id).is_some_and(|s| {
            s.values()
                .any(|(_, a)| a.step == step && a.status == "succeeded")
        })
    }

    /// Ends a run that runs no step any more (queued, blocked) as `cancelled`.
    fn end_cancelled(&mut self, run_id: RunId, error: crate::runs::RunError) {
        if let Some(run) = self.runs.get_mut(&run_id) {
            run.status = RunStatus::Cancelled;
            run.error = serde_json::to_value(error).ok();
            run.finished_ms = Some(now_ms());
            run.due_ms = None;
        }
    }

    /// Records one attempt (replacing an earlier record of the same step and attempt).
    fn record(&mut self, write: StepWrite) {
        let (status, output, error) = match write.outcome {
            Ok(out) if write.attempt == super::WAIT_ATTEMPT => ("waiting", Some(out), None),
            Ok(out) => ("succeeded", Some(out), None),
            Err(e) => ("failed", None, Some(e)),
        };
        let attempt = Attempt {
            step: write.step.to_string(),
            attempt: write.attempt,
            status,
            output,
            error,
            started_ms: write.started_ms,
            duration_us: write.duration_us,
            fingerprint: write.fingerprint,
        };
        self.steps.entry(write.run_id).or_default().insert(
            (attempt.step.clone(), attempt.attempt),
            (super::next_step_seq(), attempt),
        );
        if let Some((node, key, value)) = write.state {
            self.state.insert((node, key), value);
        }
    }

    fn timeline(&self, run_id: RunId) -> Vec<Attempt> {
        let mut attempts: Vec<(i64, Attempt)> = self
            .steps
            .get(&run_id)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        attempts.sort_by_key(|(seq, a)| (a.started_ms, *seq, a.attempt));
        attempts.into_iter().map(|(_, a)| a).collect()
    }

    fn remove(&mut self, run_id: RunId) {
        if let Some(run) = self.runs.remove(&run_id) {
            if let Some(key) = run.idempotency_key {
                self.keys.remove(&(run.workflow, key));
            }
        }
        self.steps.remove(&run_id);
    }
}

/// Whether `run` matches a `q` search as the SQLite store's does: a run id prefix, or text in
/// the idempotency key, the input or the error.
fn matches_search(run: &RunRecord, q: &str) -> bool {
    let lower = q.to_ascii_lowercase();
    let id_prefix = lower.len() <= 32
        && lower.bytes().all(|b| b.is_ascii_hexdigit())
        && run.run_id.to_string().starts_with(&lower);
    id_prefix
        || run
            .idempotency_key
            .as_deref()
            .is_some_and(|k| k.contains(q))
        || String::from_utf8_lossy(&run.input).contains(q)
        || run
            .error
            .as_ref()
            .is_some_and(|e| e.to_string().contains(q))
}

impl RunStore for MemoryStore {
    fn create_run(&self, run: NewRun) -> StoreFuture<'_, Created> {
        let created = self.data().insert(&run);
        Box::pin(async move { Ok(created) })
    }

    fn record_step(&self, write: StepWrite, create: Option<NewRun>) -> Commit {
        self.record_steps(vec![write], create)
    }

    fn record_steps(&self, writes: Vec<StepWrite>, create: Option<NewRun>) -> Commit {
        if writes.is_empty() {
            return Commit::done(Ok(()));
        }
        let mut data = self.data();
        if let Err(e) = data.create_with(create.as_ref()) {
            return Commit::done(Err(e));
        }
        for write in writes {
            data.record(write);
        }
        Commit::done(Ok(()))
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
        let mut data = self.data();
        if let Err(e) = data.create_with(create.as_ref()) {
            return Commit::done(Err(e));
        }
        for step in steps {
            data.record(step);
        }
        data.finish(write, self.keep_finished);
        Commit::done(Ok(()))
    }

    fn find_keys(
        &self,
        workflow: &'static str,
        keys: Vec<String>,
    ) -> StoreFuture<'_, Vec<(String, RunId)>> {
        let data = self.data();
        let found = keys
            .into_iter()
            .filter_map(|key| {
                let run = *data.keys.get(&(workflow.to_owned(), key.clone()))?;
                Some((key, run))
            })
            .collect();
        Box::pin(async move { Ok(found) })
    }

    fn reopen(&self, run_id: RunId) -> StoreFuture<'_, bool> {
        let reopened = match self.data().runs.get_mut(&run_id) {
            Some(run) if matches!(run.status, RunStatus::Failed | RunStatus::Blocked) => {
                run.status = RunStatus::Running;
                run.error = None;
                run.finished_ms = None;
                true
            }
            _ => false,
        };
        Box::pin(async move { Ok(reopened) })
    }

    fn fork(&self, run: NewRun, from: RunId, steps: Vec<StepWrite>) -> StoreFuture<'_, ()> {
        // Applied as the records would be, under one lock: atomic.
        let mut data = self.data();
        data.insert(&run);
        if let Some(r) = data.runs.get_mut(&run.run_id) {
            r.forked_from = Some(from);
        }
        for write in steps {
            data.record(write);
        }
        Box::pin(async move { Ok(()) })
    }

    fn reset(&self, run_id: RunId, fingerprint: Option<Fingerprint>) -> StoreFuture<'_, bool> {
        let mut data = self.data();
        let reset = match data.runs.get_mut(&run_id) {
            Some(run) if matches!(run.status, RunStatus::Failed | RunStatus::Blocked) => {
                run.status = RunStatus::Running;
                run.error = None;
                run.output = None;
                run.finished_ms = None;
                run.fingerprint = fingerprint;
                true
            }
            _ => false,
        };
        if reset {
            data.steps.remove(&run_id);
        }
        Box::pin(async move { Ok(reset) })
    }

    fn prune(&self, retention: Retention) -> StoreFuture<'_, u64> {
        let mut data = self.data();
        let cutoff = now_ms().saturating_sub(retention.max_age.as_millis() as u64);
        let finished: Vec<(RunId, u64)> = data
            .runs
            .values()
            .rev()
            .filter(|r| r.status.is_finished())
            .map(|r| (r.run_id, r.finished_ms.unwrap_or(0)))
            .collect();
        let doomed: Vec<RunId> = finished
            .iter()
            .enumerate()
            .filter(|(i, (_, at))| *at < cutoff || *i as u64 >= retention.max_runs)
            .map(|(_, (id, _))| *id)
            .collect();
        for id in &doomed {
            data.remove(*id);
        }
        let n = doomed.len() as u64;
        Box::pin(async move { Ok(n) })
    }

    fn get_run(&self, run_id: RunId) -> StoreFuture<'_, Option<RunRecord>> {
        let data = self.data();
        let run = data.runs.get(&run_id).cloned().map(|mut r| {
            r.timeline = data.timeline(run_id);
            r
        });
        Box::pin(async move { Ok(run) })
    }

    fn list_runs(&self, filter: RunFilter) -> StoreFuture<'_, Vec<RunRecord>> {
        let data = self.data();
        let runs: Vec<RunRecord> = data
            .runs
            .values()
            .rev()
            .filter(|r| filter.workflow.as_ref().is_none_or(|w| &r.workflow == w))
            .filter(|r| filter.status.is_none_or(|s| r.status == s))
            .filter(|r| filter.before.is_none_or(|b| r.run_id < b))
            .filter(|r| {
                filter
                    .search
                    .as_deref()
                    .filter(|q| !q.is_empty())
                    .is_none_or(|q| matches_search(r, q))
            })
            .take(filter.limit.max(1))
            .cloned()
            .collect();
        Box::pin(async move { Ok(runs) })
    }

    fn unfinished_runs(&self) -> StoreFuture<'_, Vec<RunRecord>> {
        let data = self.data();
        let runs: Vec<RunRecord> = data
            .runs
            .values()
            .filter(|r| r.status == RunStatus::Running)
            .cloned()
            .map(|mut r| {
                r.timeline = data.timeline(r.run_id);
                r
            })
            .collect();
        Box::pin(async move { Ok(runs) })
    }

    fn get_state(&self, node: &'static str, key: String) -> StoreFuture<'_, Option<Bytes>> {
        let value = self.data().state.get(&(node, key)).cloned();
        Box::pin(async move { Ok(value) })
    }

    fn deliver(&self, write: StepWrite) -> StoreFuture<'_, Delivery> {
        let mut data = self.data();
        let run_id = write.run_id;
        let delivery = match data.runs.get(&run_id).map(|r| r.status) {
            None => Delivery::UnknownRun,
            Some(s) if s.is_finished() || s == RunStatus::Blocked => Delivery::Finished(s),
            Some(_) if data.has_value(run_id, &write.step) => Delivery::AlreadyDelivered,
            Some(status) => {
                data.record(write);
                if status == RunStatus::Waiting {
                    if let Some(run) = data.runs.get_mut(&run_id) {
                        run.status = RunStatus::Running;
                        run.due_ms = None;
                    }
                    Delivery::Woken(Box::new(data.whole(run_id).expect("present")))
                } else {
                    Delivery::Kept
                }
            }
        };
        Box::pin(async move { Ok(delivery) })
    }

    fn suspend(&self, run_id: RunId, step: String, due_ms: Option<u64>) -> StoreFuture<'_, bool> {
        let mut data = self.data();
        let suspended = !data.has_value(run_id, &step)
            && match data.runs.get_mut(&run_id) {
                Some(run) if run.status == RunStatus::Running => {
                    run.status = RunStatus::Waiting;
                    run.due_ms = due_ms;
                    true
                }
                _ => false,
            };
        Box::pin(async move { Ok(suspended) })
    }

    fn wake_due(&self, now: u64, limit: usize) -> StoreFuture<'_, Vec<RunRecord>> {
        let mut data = self.data();
        let due: Vec<RunId> = data
            .runs
            .values()
            .filter(|r| r.status == RunStatus::Waiting && r.due_ms.is_some_and(|d| d <= now))
            .map(|r| r.run_id)
            .take(limit)
            .collect();
        let mut woken = Vec::new();
        for id in due {
            if let Some(run) = data.runs.get_mut(&id) {
                run.status = RunStatus::Running;
                run.due_ms = None;
            }
            woken.extend(data.whole(id));
        }
        Box::pin(async move { Ok(woken) })
    }

    fn start_queued(
        &self,
        workflow: &'static str,
        spec: QueueSpec,
        now: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<RunRecord>> {
        let mut data = self.data();
        let data = &mut *data;
        // The workflow's runs per key: how many hold a slot, how many started in the window.
        let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
        let mut queued = Vec::new();
        for run in data.runs.values().filter(|r| r.workflow == workflow) {
            let Some(l) = data.limited.get(&run.run_id) else {
                continue;
            };
            let entry = counts.entry(l.key.clone()).or_default();
            match run.status {
                RunStatus::Queued => {
                    queued.push((l.priority, run.run_id, l.key.clone(), run.due_ms))
                }
                RunStatus::Running | RunStatus::Waiting => entry.0 += 1,
                _ => {}
            }
            if let (Some((_, per)), Some(at)) = (spec.rate, l.started_ms) {
                if at + per > now {
                    entry.1 += 1;
                }
            }
        }
        // Higher priority first, then arrival (ids sort by creation).
        queued.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let queued = queued
            .into_iter()
            .map(|(_, id, key, due)| (id, key, due))
            .collect();
        let mut started = Vec::new();
        for id in super::runs_to_start(queued, counts, spec, now, limit) {
            if let Some(l) = data.limited.get_mut(&id) {
                l.started_ms = Some(now);
            }
            if let Some(run) = data.runs.get_mut(&id) {
                run.status = RunStatus::Running;
                run.due_ms = None;
            }
            started.extend(data.whole(id));
        }
        Box::pin(async move { Ok(started) })
    }

    fn supersede(
        &self,
        workflow: &'static str,
        key: String,
        keep: RunId,
    ) -> StoreFuture<'_, Vec<RunId>> {
        let mut data = self.data();
        let doomed: Vec<RunId> = data
            .runs
            .values()
            .filter(|r| r.workflow == workflow && r.status == RunStatus::Queued && r.run_id != keep)
            .filter(|r| data.limited.get(&r.run_id).is_some_and(|l| l.key == key))
            .map(|r| r.run_id)
            .collect();
        for id in &doomed {
            data.end_cancelled(*id, crate::runs::RunError::debounced(keep));
        }
        Box::pin(async move { Ok(doomed) })
    }

    fn cancel(&self, run_id: RunId) -> StoreFuture<'_, Cancel> {
        let mut data = self.data();
        let outcome = match data.runs.get(&run_id).map(|r| r.status) {
            None => Cancel::UnknownRun,
            Some(s) if s.is_finished() => Cancel::Finished(s),
            Some(RunStatus::Queued | RunStatus::Blocked) => {
                data.end_cancelled(run_id, crate::runs::RunError::cancelled());
                Cancel::Ended
            }
            Some(RunStatus::Waiting) => {
                if let Some(run) = data.runs.get_mut(&run_id) {
                    run.status = RunStatus::Running;
                    run.due_ms = None;
                }
                Cancel::Woken(Box::new(data.whole(run_id).expect("present")))
            }
            Some(_) => Cancel::Running,
        };
        Box::pin(async move { Ok(outcome) })
    }

    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn durable(&self) -> bool {
        false
    }
}
