//! Observability and operations: tracing spans for runs and node attempts
//! ([`TraceParent`] carries a caller's trace context in), Prometheus metrics (`GET /metrics`),
//! the live event stream (`GET /events`), and, with the `otel` feature, OTLP export.
//!
//! Everything here is fed from a few hooks in the runner (a run starts, a node attempt ends,
//! a run ends, a cron tick fires, the journal commits) and costs a handful of relaxed atomic
//! additions per hook when nobody is watching.

pub(crate) mod events;
pub(crate) mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
pub(crate) mod trace;

pub use trace::TraceParent;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use serde_json::json;

use crate::error::Error;
use crate::graph::Graph;
use crate::id::RunId;
use crate::node::NodeError;
use crate::runs::{now_ms, RunError};
use events::Events;
use metrics::{Metrics, WorkflowMetrics};

/// Keeps trace export (feature `otel`) running while `serve` runs; flushes it when dropped.
#[derive(Debug)]
pub(crate) struct ExportGuard {
    /// Held for its `Drop`, which flushes the exporter.
    #[cfg(feature = "otel")]
    #[allow(dead_code)]
    pub(crate) otel: Option<otel::OtelGuard>,
}

/// The runner's metrics and event hub.
#[derive(Debug)]
pub(crate) struct Observability {
    /// `None` when metrics are off (`--metrics off`).
    pub(crate) metrics: Option<Metrics>,
    pub(crate) events: Events,
}

impl Observability {
    pub(crate) fn new<'a>(graphs: impl IntoIterator<Item = &'a Graph>, metrics: bool) -> Arc<Self> {
        Arc::new(Self {
            metrics: metrics.then(|| Metrics::new(graphs)),
            events: Events::default(),
        })
    }

    fn workflow(&self, name: &str) -> Option<&Arc<WorkflowMetrics>> {
        self.metrics.as_ref().and_then(|m| m.workflow(name))
    }

    /// What a run's context carries to report its node attempts.
    pub(crate) fn observer(self: &Arc<Self>, workflow: &str) -> RunObserver {
        RunObserver {
            hub: self.clone(),
            metrics: self.workflow(workflow).cloned(),
        }
    }

    pub(crate) fn run_started(&self, run_id: RunId, workflow: &'static str) {
        if let Some(w) = self.workflow(workflow) {
            w.run_started();
        }
        if self.events.active() {
            self.events.publish(
                "run_started",
                &json!({"run_id": run_id, "workflow": workflow, "at_ms": now_ms()}),
            );
        }
    }

    pub(crate) fn run_finished(
        &self,
        run_id: RunId,
        workflow: &'static str,
        took: Duration,
        result: &Result<Bytes, Error>,
    ) {
        let blocked = matches!(result, Err(Error::GraphChanged { .. }));
        let waits = matches!(result, Err(Error::Waiting { .. }));
        let duplicate = matches!(result, Err(Error::Duplicate { .. }));
        // A duplicate is not a run of its own: the earlier run holding its key is counted.
        if let Some(w) = self.workflow(workflow).filter(|_| !duplicate) {
            if waits {
                w.run_suspended();
            } else if blocked {
                w.run_blocked(took);
            } else {
                w.run_finished(result.is_ok(), took);
            }
        }
        if self.events.active() {
            let status = match result {
                Ok(_) => "succeeded",
                Err(_) if blocked => "blocked",
                Err(_) if waits => "waiting",
                Err(Error::Cancelled { .. }) => "cancelled",
                Err(Error::Duplicate { .. }) => "duplicate",
                Err(_) => "failed",
            };
            let mut event = json!({
                "run_id": run_id,
                "workflow": workflow,
                "status": status,
                "duration_us": took.as_micros() as u64,
                "at_ms": now_ms(),
            });
            if let Err(e) = result {
                event["error"] =
                    serde_json::to_value(RunError::from_error(e).1).unwrap_or_default();
            }
            self.events.publish("run_finished", &event);
        }
    }

    /// A cron tick fired `lag` after its scheduled time.
    pub(crate) fn cron_fired(&self, workflow: &str, lag: Duration) {
        if let Some(w) = self.workflow(workflow) {
            w.cron_fired(lag);
        }
    }

    /// A cron tick was dropped by its overlap policy.
    pub(crate) fn cron_skipped(&self, workflow: &str) {
        if let Some(w) = self.workflow(workflow) {
            w.cron_skipped();
        }
    }
}

/// Reports one run's node attempts. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct RunObserver {
    hub: Arc<Observability>,
    metrics: Option<Arc<WorkflowMetrics>>,
}

impl RunObserver {
    /// One attempt of `step` ended after `took`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attempt(
        &self,
        run_id: RunId,
        workflow: &'static str,
        step: &'static str,
        attempt: u32,
        took: Duration,
        error: Option<&NodeError>,
        will_retry: bool,
    ) {
        if let Some(m) = &self.metrics {
            m.attempt(step, took, error.map(|_| will_retry));
        }
        let events = &self.hub.events;
        if events.active() {
            let finished_ms = now_ms();
            let mut event = json!({
                "run_id": run_id,
                "workflow": workflow,
                "step": step,
                "attempt": attempt,
                "status": if error.is_some() { "failed" } else { "succeeded" },
                "will_retry": will_retry,
                "started_ms": finished_ms.saturating_sub(took.as_millis() as u64),
                "duration_us": took.as_micros() as u64,
            });
            if let Some(e) = error {
                event["error"] = serde_json::to_value(e).unwrap_or_default();
            }
            events.publish("step_finished", &event);
        }
    }
}
