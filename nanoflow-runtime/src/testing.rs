//! A test harness for workflows (feature `testing`, issue 13): a virtual clock, so that
//! retries, backoff, timeouts and cron schedules run instantly and deterministically, and crash
//! injection, to check that a run stopped after any journal write resumes without running a
//! completed step again.
//!
//! The harness owns a single-threaded tokio runtime whose clock is paused: whenever every task
//! waits on a timer, time jumps to the next one. Use it from a plain `#[test]` (not inside
//! another runtime). Runs are journaled in memory, exactly as the runner journals them.
//!
//! `docs/testing.md` shows it on a workflow; `tests/harness.rs` is the example to copy.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;

use crate::error::Error;
use crate::fingerprint::Fingerprint;
use crate::id::RunId;
use crate::journal::{Journal, NewRun, RunRecord};
use crate::run::{Durable, RunCtx};
use crate::store::memory::MemoryStore;
use crate::store::{
    Commit, Created, FinishWrite, Retention, RunFilter, RunStore, StepWrite, StoreError,
    StoreFuture,
};
use crate::trigger::{Tick, TriggerDef};
use crate::workflow::{DynWorkflow, Workflow};

/// The random sequence a harness starts with unless told otherwise.
const DEFAULT_SEED: u64 = 0x6e61_6e6f_666c_6f77;

/// 2026-01-01T00:00:00Z, where a harness's wall clock starts unless told otherwise.
const DEFAULT_START_MS: i64 = 1_767_225_600_000;

/// Runs workflows under a virtual clock, journaled in memory. See the [module](self).
pub struct Harness {
    rt: tokio::runtime::Runtime,
    /// The crash point and the counts, shared with the journal's store.
    crash: Arc<Crash>,
    journal: Journal,
    /// The virtual instant the harness started at.
    base: tokio::time::Instant,
    /// Its wall-clock time, in milliseconds since the Unix epoch.
    start_ms: i64,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("elapsed", &self.elapsed())
            .field("now_ms", &self.now_ms())
            .finish()
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A harness whose wall clock starts at 2026-01-01T00:00:00Z, and whose backoff jitter
    /// is the same sequence in every harness (see [`Harness::with_seed`]).
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime builds");
        let base = rt.block_on(async { tokio::time::Instant::now() });
        crate::id::seed_random(DEFAULT_SEED);
        let crash = Arc::new(Crash::default());
        let journal = Journal::new(CrashStore {
            inner: MemoryStore::new(),
            crash: crash.clone(),
        });
        Self {
            rt,
            crash,
            journal,
            base,
            start_ms: DEFAULT_START_MS,
        }
    }

    /// Draws backoff jitter (and other random numbers of this thread) from the sequence of
    /// `seed`: the same seed gives the same delays, so virtual times repeat exactly.
    pub fn with_seed(self, seed: u64) -> Self {
        crate::id::seed_random(seed);
        self
    }

    /// Starts the virtual wall clock at `ms` (milliseconds since the Unix epoch, UTC).
    pub fn starting_at_ms(mut self, ms: i64) -> Self {
        self.start_ms = ms;
        self
    }

    /// Virtual time passed since the harness started.
    pub fn elapsed(&self) -> Duration {
        self.rt
            .block_on(async { tokio::time::Instant::now() })
            .duration_since(self.base)
    }

    /// The virtual wall clock, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.start_ms + self.elapsed().as_millis() as i64
    }

    /// Runs `future` under the virtual clock (e.g. `h.block_on(flow.run(x))`, unjournaled).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// Runs `workflow` on `input`, journaled in memory, under the virtual clock.
    pub fn run<W: Workflow>(&self, workflow: W, input: W::Input) -> Result<W::Output, Error> {
        let json = to_json(&input)?;
        let run_id = RunId::new();
        self.rt.block_on(async {
            self.create(&workflow, run_id, &json).await?;
            let bytes = self
                .drive(&workflow, run_id, &json, Default::default())
                .await?;
            from_json(&bytes)
        })
    }

    /// Fires `workflow`'s cron trigger `ticks` times from the virtual wall clock's current time,
    /// the clock jumping to each scheduled time; returns each tick with its run's outcome.
    pub fn cron<W: Workflow<Input = Tick>>(
        &self,
        workflow: W,
        ticks: usize,
    ) -> Result<Vec<Fired<W::Output>>, Error> {
        let graph = Workflow::graph(&workflow);
        let (expr, tz) = graph
            .triggers
            .iter()
            .find_map(|t| match t {
                TriggerDef::Cron { schedule, tz, .. } => Some((*schedule, *tz)),
                _ => None,
            })
            .ok_or_else(|| {
                Error::Config(format!("workflow `{}` has no cron trigger", graph.name))
            })?;
        let schedule = crate::triggers::cron::Schedule::new(expr, tz)?;
        let mut out = Vec::with_capacity(ticks);
        for _ in 0..ticks {
            let now = chrono::DateTime::from_timestamp_millis(self.now_ms())
                .ok_or_else(|| Error::Config("the virtual clock is out of range".into()))?;
            let next = schedule
                .next_after(now)
                .ok_or_else(|| Error::Config(format!("the schedule `{expr}` has no next time")))?;
            let wait = (next - now).to_std().unwrap_or_default();
            self.rt
                .block_on(async move { tokio::time::sleep(wait).await });
            let tick = Tick {
                scheduled_ms: next.timestamp_millis(),
                fired_ms: self.now_ms(),
            };
            let outcome = self.run(workflow, tick);
            out.push((tick, outcome));
        }
        Ok(out)
    }

    /// Runs `workflow` on `input` and stops it right after its `after_writes`-th journal write
    /// (every later write fails, as if the process died), then resumes it from what the
    /// journal holds, as a restarted runner would, and lets it finish.
    pub fn crash<W: Workflow>(
        &self,
        workflow: W,
        input: W::Input,
        after_writes: usize,
    ) -> Result<Crashed<W::Output>, Error> {
        let json = to_json(&input)?;
        let run_id = RunId::new();
        self.rt.block_on(async {
            self.create(&workflow, run_id, &json).await?;
            self.crash.arm(after_writes);
            let first = self
                .drive(&workflow, run_id, &json, Default::default())
                .await;
            let (crashed, before) = self.crash.disarm();
            let output = if crashed {
                let record = self.recorded(run_id).await?;
                let resumed = record.completed_steps().into_iter().collect();
                self.drive(&workflow, run_id, &json, resumed).await
            } else {
                first
            };
            let executions = self.crash.executions();
            Ok(Crashed {
                output: output.and_then(|b| from_json(&b)),
                crashed,
                completed_before_crash: before,
                executions,
            })
        })
    }

    /// The journal's record of run `run_id` (every run the harness drove is kept).
    pub fn record(&self, run_id: RunId) -> Option<RunRecord> {
        self.rt
            .block_on(self.journal.get_run(run_id))
            .ok()
            .flatten()
    }

    async fn create<W: Workflow>(&self, wf: &W, run_id: RunId, json: &Bytes) -> Result<(), Error> {
        let graph = Workflow::graph(wf);
        self.journal
            .create_run(NewRun {
                queued: None,
                run_id,
                workflow: graph.name,
                input: json.clone(),
                idempotency_key: None,
                fingerprint: Some(graph.fingerprint()),
            })
            .await
            .map(|_| ())
    }

    async fn drive<W: Workflow>(
        &self,
        wf: &W,
        run_id: RunId,
        json: &Bytes,
        resumed: std::collections::HashMap<String, Bytes>,
    ) -> Result<Bytes, Error> {
        let graph = Workflow::graph(wf);
        let ctx = RunCtx::durable(
            graph.name,
            run_id,
            Durable {
                waits: Default::default(),
                journal: self.journal.clone(),
                graph,
                resumed,
                pending_create: Mutex::default(),
                deferred: Mutex::default(),
                downstream: Vec::new(),
            },
        )
        .with_state(Default::default());
        let future = DynWorkflow::start(wf, ctx, json).map_err(|error| Error::InvalidInput {
            workflow: graph.name,
            error,
        })?;
        future.await
    }

    async fn recorded(&self, run_id: RunId) -> Result<RunRecord, Error> {
        self.journal
            .get_run(run_id)
            .await?
            .ok_or_else(|| Error::Journal(format!("run `{run_id}` is not in the journal")))
    }
}

/// A cron tick [`Harness::cron`] fired, with its run's outcome.
pub type Fired<T> = (Tick, Result<T, Error>);

/// What [`Harness::crash`] saw.
#[derive(Debug)]
pub struct Crashed<T> {
    /// The run's output after the resume (or without one, when the run ended before the
    /// crash point).
    pub output: Result<T, Error>,
    /// Whether the crash happened (the run made more writes than the crash point).
    pub crashed: bool,
    /// The steps whose success was durable before the crash.
    pub completed_before_crash: Vec<String>,
    /// How many times each step succeeded (ran to a recorded or attempted success), across
    /// the crash and the resume.
    pub executions: BTreeMap<String, u32>,
}

impl<T> Crashed<T> {
    /// Panics unless every step completed before the crash ran exactly once: the resume reused
    /// its recorded output. (The step in flight at the crash may run twice: at-least-once.)
    pub fn assert_completed_steps_ran_once(&self) {
        for step in &self.completed_before_crash {
            let n = self.executions.get(step).copied().unwrap_or(0);
            assert_eq!(
                n, 1,
                "step `{step}` completed before the crash and ran {n} times: {:?}",
                self.executions
            );
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Bytes, Error> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Error::Config(format!("the input does not serialize to JSON: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Config(format!("the output does not deserialize: {e}")))
}

/// A memory store that fails every write after a crash point, and counts the successes of
/// each step.
#[derive(Debug)]
struct CrashStore {
    inner: MemoryStore,
    crash: Arc<Crash>,
}

/// The crash point and what was written around it.
#[derive(Debug, Default)]
struct Crash(Mutex<CrashState>);

#[derive(Debug, Default)]
struct CrashState {
    /// Writes left before the crash; `None`: no crash armed.
    left: Option<usize>,
    crashed: bool,
    /// Steps whose successful record was applied before the crash.
    durable: BTreeSet<String>,
    /// Successes of each step, applied or not, since the crash was armed.
    executions: BTreeMap<String, u32>,
}

impl Crash {
    fn lock(&self) -> std::sync::MutexGuard<'_, CrashState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn arm(&self, writes: usize) {
        *self.lock() = CrashState {
            left: Some(writes),
            ..CrashState::default()
        };
    }

    /// Ends the crash; returns whether it happened and what was durable before it.
    fn disarm(&self) -> (bool, Vec<String>) {
        let mut s = self.lock();
        s.left = None;
        let crashed = std::mem::take(&mut s.crashed);
        (crashed, s.durable.iter().cloned().collect())
    }

    fn executions(&self) -> BTreeMap<String, u32> {
        std::mem::take(&mut self.lock().executions)
    }

    /// Whether the next write goes through (and counts it).
    fn admit(&self, success_of: Option<&str>) -> bool {
        let mut s = self.lock();
        if let Some(step) = success_of {
            *s.executions.entry(step.to_owned()).or_default() += 1;
        }
        if s.crashed {
            return false;
        }
        match s.left {
            None => true,
            Some(0) => {
                s.crashed = true;
                false
            }
            Some(n) => {
                s.left = Some(n - 1);
                if let Some(step) = success_of {
                    s.durable.insert(step.to_owned());
                }
                true
            }
        }
    }
}

fn crashed() -> StoreError {
    StoreError::Unavailable("crash injected by the test harness".into())
}

impl RunStore for CrashStore {
    fn create_run(&self, run: NewRun) -> StoreFuture<'_, Created> {
        self.inner.create_run(run)
    }

    fn record_step(&self, write: StepWrite, create: Option<NewRun>) -> Commit {
        let success = write.outcome.is_ok().then(|| write.step.to_string());
        if self.crash.admit(success.as_deref()) {
            self.inner.record_step(write, create)
        } else {
            Commit::done(Err(crashed()))
        }
    }

    fn finish(&self, write: FinishWrite, create: Option<NewRun>) -> Commit {
        if self.crash.admit(None) {
            self.inner.finish(write, create)
        } else {
            Commit::done(Err(crashed()))
        }
    }

    fn reopen(&self, run_id: RunId) -> StoreFuture<'_, bool> {
        self.inner.reopen(run_id)
    }

    fn reset(&self, run_id: RunId, fingerprint: Option<Fingerprint>) -> StoreFuture<'_, bool> {
        self.inner.reset(run_id, fingerprint)
    }

    fn fork(&self, run: NewRun, from: RunId, steps: Vec<StepWrite>) -> StoreFuture<'_, ()> {
        self.inner.fork(run, from, steps)
    }

    fn prune(&self, retention: Retention) -> StoreFuture<'_, u64> {
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

    fn deliver(&self, write: StepWrite) -> StoreFuture<'_, crate::store::Delivery> {
        if self.crash.admit(Some(&write.step)) {
            self.inner.deliver(write)
        } else {
            Box::pin(async { Err(crashed()) })
        }
    }

    fn suspend(&self, run_id: RunId, step: String, due_ms: Option<u64>) -> StoreFuture<'_, bool> {
        if self.crash.admit(None) {
            self.inner.suspend(run_id, step, due_ms)
        } else {
            Box::pin(async { Err(crashed()) })
        }
    }

    fn wake_due(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<RunRecord>> {
        self.inner.wake_due(now_ms, limit)
    }

    fn start_queued(
        &self,
        workflow: &'static str,
        spec: crate::store::QueueSpec,
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
        self.inner.supersede(workflow, key, keep)
    }

    fn cancel(&self, run_id: RunId) -> StoreFuture<'_, crate::store::Cancel> {
        self.inner.cancel(run_id)
    }

    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn durable(&self) -> bool {
        false
    }
}
