//! One run of a workflow: its id, its context, and how each step is executed
//! (retries with backoff and jitter, timeouts, panics caught).

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt as _;

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;

use crate::error::Error;
use crate::graph::Graph;
use crate::journal::{FinishWrite, Journal, NewRun, StepWrite};
use crate::node::{Accepts, Node, NodeError, NodeOptions};
use crate::runs::RunError;

/// A run's identifier: 48 bits of milliseconds since the Unix epoch, then 80 random bits, shown
/// as 32 hex digits, so ids sort by start time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(u128);

impl RunId {
    /// A new, unique, time-ordered id.
    pub fn new() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let rand = (u128::from(random_u64()) << 16) | u128::from(random_u64() & 0xffff);
        RunId(((ms & 0xffff_ffff_ffff) << 80) | rand)
    }

    /// The id as a number.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    pub(crate) const fn from_u128(id: u128) -> Self {
        RunId(id)
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({self})")
    }
}

impl FromStr for RunId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 {
            return Err(format!("run id `{s}` must be 32 hex digits"));
        }
        u128::from_str_radix(s, 16)
            .map(RunId)
            .map_err(|_| format!("run id `{s}` is not hex"))
    }
}

impl serde::Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A fast, non-cryptographic random number (jitter, run ids).
pub(crate) fn random_u64() -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0));
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// The delay before retry number `retry` (1 for the first retry): exponential from
/// `options.backoff`, capped at `options.max_backoff`, with "equal jitter" (a uniformly random
/// value in the upper half), so synchronized failures spread out while the delay stays bounded.
pub fn backoff_delay(options: &NodeOptions, retry: u32) -> Duration {
    let factor = 1u32
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let full = options
        .backoff
        .saturating_mul(factor)
        .min(options.max_backoff);
    let half = full / 2;
    let nanos = half.as_nanos() as u64;
    let jitter = if nanos == 0 {
        0
    } else {
        random_u64() % (nanos + 1)
    };
    half + Duration::from_nanos(jitter)
}

/// The context of one run, passed to every step. Created by [`Workflow::run`](crate::Workflow::run)
/// or by the runner.
#[derive(Debug)]
pub struct RunCtx {
    run_id: RunId,
    workflow: &'static str,
    durable: Option<Box<Durable>>,
}

/// What a journaled run carries: where to record, and what a resumed run already completed.
#[derive(Debug)]
pub(crate) struct Durable {
    pub(crate) journal: Journal,
    pub(crate) graph: &'static Graph,
    /// Outputs of steps completed before a crash or a re-drive, by step name.
    pub(crate) resumed: HashMap<String, Bytes>,
    /// The run row, written with the run's first record (runs acknowledged only on completion
    /// need no commit of their own before they start).
    pub(crate) pending_create: Mutex<Option<NewRun>>,
    /// The workflows chained `after` this one: recorded with this run's success.
    pub(crate) downstream: Vec<&'static str>,
}

impl RunCtx {
    /// A context for a new run of `workflow`.
    pub fn new(workflow: &'static str) -> Self {
        Self {
            run_id: RunId::new(),
            workflow,
            durable: None,
        }
    }

    /// A context for a run with a known id.
    pub fn with_id(workflow: &'static str, run_id: RunId) -> Self {
        Self {
            run_id,
            workflow,
            durable: None,
        }
    }

    /// A journaled run.
    pub(crate) fn durable(workflow: &'static str, run_id: RunId, durable: Durable) -> Self {
        Self {
            run_id,
            workflow,
            durable: Some(Box::new(durable)),
        }
    }

    /// This run's id.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// The workflow being run.
    pub fn workflow(&self) -> &'static str {
        self.workflow
    }

    /// Runs step `name` (node `N`) on `input`, applying the node's retry and timeout policy.
    ///
    /// Generated by `workflow!` for every node occurrence; the `Accepts` bound is the
    /// compile-time check that the edge into this step carries the right type.
    #[doc(hidden)]
    #[inline]
    pub async fn step<N, T>(&self, name: &'static str, input: T) -> Result<N::Output, Error>
    where
        N: Accepts<T, <N as Node>::Input>,
    {
        let input = N::into_input(input);
        match &self.durable {
            None => self.attempts::<N>(name, input, None).await,
            Some(durable) => {
                if let Some(recorded) = durable.resumed.get(name) {
                    // Completed before a restart: never run again.
                    return serde_json::from_slice(recorded).map_err(|e| {
                        self.node_failed(
                            name,
                            0,
                            NodeError::permanent(format!(
                                "the journaled output no longer fits the node's output type: {e}"
                            )),
                        )
                    });
                }
                self.attempts::<N>(name, input, Some(durable)).await
            }
        }
    }

    async fn attempts<N: Node>(
        &self,
        name: &'static str,
        input: N::Input,
        durable: Option<&Durable>,
    ) -> Result<N::Output, Error> {
        let options = N::OPTIONS;
        let mut attempt = 1;
        loop {
            let last = attempt > options.retries;
            let arg = if last {
                None
            } else {
                Some(N::duplicate(&input).map_err(|error| self.node_failed(name, attempt, error))?)
            };
            let started = durable.map(|_| (crate::runs::now_ms(), std::time::Instant::now()));
            let outcome = match arg {
                Some(copy) => attempt_once::<N>(copy, &options).await,
                None => {
                    break self
                        .finish_attempts::<N>(
                            name,
                            attempt,
                            attempt_once::<N>(input, &options).await,
                            durable,
                            started,
                        )
                        .await
                }
            };
            match outcome {
                Err(error) if error.is_retryable() => {
                    if let (Some(d), Some(started)) = (durable, started) {
                        self.record(d, name, attempt, Err(&error), started);
                    }
                    let delay = backoff_delay(&options, attempt);
                    tracing::debug!(
                        run_id = %self.run_id, workflow = self.workflow, node = name, attempt,
                        error = %error, retry_in = ?delay, "node attempt failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => {
                    break self
                        .finish_attempts::<N>(name, attempt, other, durable, started)
                        .await
                }
            }
        }
    }

    async fn finish_attempts<N: Node>(
        &self,
        name: &'static str,
        attempt: u32,
        outcome: Result<N::Output, NodeError>,
        durable: Option<&Durable>,
        started: Option<(u64, std::time::Instant)>,
    ) -> Result<N::Output, Error> {
        let (Some(d), Some(started)) = (durable, started) else {
            return outcome.map_err(|error| self.node_failed(name, attempt, error));
        };
        match outcome {
            Ok(output) => {
                let bytes = serde_json::to_vec(&output).map_err(|e| {
                    self.node_failed(
                        name,
                        attempt,
                        NodeError::permanent(format!("the output does not serialize to JSON: {e}")),
                    )
                })?;
                let committed = self.record(d, name, attempt, Ok(Bytes::from(bytes)), started);
                // A step whose successors would start now must be durable first, so that a
                // crash can never make it run twice. A last step is made durable together with
                // the run's finish record.
                if !d.graph.is_terminal(name) {
                    wait_commit(committed).await?;
                }
                Ok(output)
            }
            Err(error) => {
                // Recorded with the run's failure, which is awaited.
                drop(self.record(d, name, attempt, Err(&error), started));
                Err(self.node_failed(name, attempt, error))
            }
        }
    }

    fn record(
        &self,
        d: &Durable,
        step: &'static str,
        attempt: u32,
        outcome: Result<Bytes, &NodeError>,
        started: (u64, std::time::Instant),
    ) -> tokio::sync::oneshot::Receiver<Result<(), String>> {
        let write = StepWrite {
            run_id: self.run_id,
            step,
            attempt,
            outcome: outcome.map_err(|e| serde_json::to_value(e).unwrap_or_default()),
            started_ms: started.0,
            duration_us: started.1.elapsed().as_micros() as u64,
        };
        // Taking the pending run row and sending under one lock keeps the row ahead of every
        // other record of this run in the writer's queue.
        let mut pending = d.pending_create.lock().unwrap_or_else(|p| p.into_inner());
        d.journal.record_step(write, pending.take())
    }

    /// Records the run's end (durably) when journaled.
    pub(crate) async fn finish_run(&self, outcome: Result<Bytes, RunError>) -> Result<(), Error> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        // The runs this success starts are recorded in the same transaction: none is lost, and
        // none is recorded for a run whose success is not.
        let chained = match &outcome {
            Ok(output) => d
                .downstream
                .iter()
                .map(|&workflow| NewRun {
                    run_id: crate::triggers::chain::run_id(self.run_id, workflow),
                    workflow,
                    input: output.clone(),
                    idempotency_key: Some(crate::triggers::chain::key(self.run_id)),
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let committed = {
            let mut pending = d.pending_create.lock().unwrap_or_else(|p| p.into_inner());
            d.journal.finish(
                FinishWrite {
                    run_id: self.run_id,
                    outcome,
                    chained,
                },
                pending.take(),
            )
        };
        wait_commit(committed).await
    }

    pub(crate) fn is_durable(&self) -> bool {
        self.durable.is_some()
    }

    fn node_failed(&self, node: &'static str, attempt: u32, error: NodeError) -> Error {
        Error::Node {
            workflow: self.workflow,
            node,
            attempt,
            run_id: self.run_id,
            error,
        }
    }
}

async fn wait_commit(rx: tokio::sync::oneshot::Receiver<Result<(), String>>) -> Result<(), Error> {
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Journal(format!("journal write failed: {e}"))),
        Err(_) => Err(Error::Journal("the journal writer stopped".into())),
    }
}

async fn attempt_once<N: Node>(
    input: N::Input,
    options: &NodeOptions,
) -> Result<N::Output, NodeError> {
    let call = AssertUnwindSafe(N::call(input)).catch_unwind();
    let outcome = match options.timeout {
        None => call.await,
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(outcome) => outcome,
            Err(_) => return Err(NodeError::timeout(limit)),
        },
    };
    outcome.unwrap_or_else(|payload| Err(NodeError::panic(panic_message(payload.as_ref()))))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_unique_and_round_trip() {
        let a = RunId::new();
        let b = RunId::new();
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<RunId>().unwrap(), a);
        assert!("xyz".parse::<RunId>().is_err());
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let options = NodeOptions {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..NodeOptions::DEFAULT
        };
        for _ in 0..200 {
            let d1 = backoff_delay(&options, 1);
            assert!(
                d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
                "{d1:?}"
            );
            let d2 = backoff_delay(&options, 2);
            assert!(
                d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200),
                "{d2:?}"
            );
            let d5 = backoff_delay(&options, 5);
            assert!(
                d5 >= Duration::from_millis(175) && d5 <= Duration::from_millis(350),
                "{d5:?}"
            );
        }
        assert!(backoff_delay(&options, 40) <= Duration::from_millis(350));
    }
}
