//! Where a run stands and how its error reads to clients: the vocabulary of run records,
//! shared by every store and the run API.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use serde::Serialize;

use crate::id::RunId;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted and not finished.
    Running,
    /// Accepted, waiting for a limit of its workflow (`#[limit(..)]`) to let it start.
    Queued,
    /// Waiting for a signal or a sleep's end, holding no task.
    Waiting,
    /// Cancelled before it finished (or replaced within a debounce window): compensations of
    /// its completed steps ran.
    Cancelled,
    /// Finished with an output.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Parked: it cannot resume on the graph of this build (error `graph_changed`); it stays
    /// until retried or cancelled.
    Blocked,
}

impl RunStatus {
    /// Whether the run ended (succeeded, failed or cancelled): nothing changes it any more.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// `running`, `queued`, `waiting`, `succeeded`, `failed`, `cancelled` or `blocked`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Queued => "queued",
            RunStatus::Waiting => "waiting",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Blocked => "blocked",
        }
    }

    /// The status named `text` (see [`RunStatus::as_str`]).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "running" => Some(RunStatus::Running),
            "queued" => Some(RunStatus::Queued),
            "waiting" => Some(RunStatus::Waiting),
            "cancelled" => Some(RunStatus::Cancelled),
            "succeeded" => Some(RunStatus::Succeeded),
            "failed" => Some(RunStatus::Failed),
            "blocked" => Some(RunStatus::Blocked),
            _ => None,
        }
    }
}

/// The error of a failed run, as clients see it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunError {
    /// Stable machine-readable code (`node_failed`, `node_timeout`, ...).
    pub code: String,
    /// A message safe to show a client.
    pub message: String,
    /// The step that failed, when a node failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The step a `graph_changed` error is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

impl RunError {
    /// The error of a run parked because the graph changed under it (status `blocked`).
    pub fn graph_changed(changed: &crate::fingerprint::GraphChanged) -> Self {
        RunError {
            code: "graph_changed".into(),
            message: changed.message.clone(),
            node: None,
            step: Some(changed.step.clone()),
        }
    }

    /// Whether a run ending with this error is parked as [`RunStatus::Blocked`] rather than
    /// failed.
    pub fn blocks(&self) -> bool {
        self.code == "graph_changed"
    }

    /// The error of a cancelled run.
    pub fn cancelled() -> Self {
        RunError {
            code: "cancelled".into(),
            message: "the run was cancelled".into(),
            node: None,
            step: None,
        }
    }

    /// The error of a queued run replaced by the newer run `by` within its debounce window.
    pub fn debounced(by: crate::id::RunId) -> Self {
        RunError {
            code: "debounced".into(),
            message: format!("replaced by run {by} within the debounce window"),
            node: None,
            step: None,
        }
    }

    /// The status of a run that ended with this error: `blocked` for `graph_changed`,
    /// `cancelled` for a cancellation or a debounced run, else `failed`.
    pub fn status(&self) -> RunStatus {
        match self.code.as_str() {
            "graph_changed" => RunStatus::Blocked,
            "cancelled" | "debounced" => RunStatus::Cancelled,
            _ => RunStatus::Failed,
        }
    }

    /// The HTTP status and the client-safe error of a failed run. Never leaks internals: a
    /// panic's message stays in the log, runner errors say only where to look.
    pub fn from_error(error: &crate::error::Error) -> (u16, RunError) {
        use crate::node::ErrorKind;
        match error {
            crate::error::Error::Node { node, error, .. } => {
                let status = error.status().unwrap_or(match error.kind() {
                    ErrorKind::Timeout => 504,
                    _ => 500,
                });
                let message = match error.kind() {
                    ErrorKind::Panic => format!("node `{node}` panicked"),
                    _ => error.message().to_owned(),
                };
                (
                    status,
                    RunError {
                        code: error.code().to_owned(),
                        message,
                        node: Some(node.to_string()),
                        step: None,
                    },
                )
            }
            crate::error::Error::GraphChanged { step, message, .. } => (
                409,
                RunError {
                    code: "graph_changed".into(),
                    message: message.clone(),
                    node: None,
                    step: Some(step.to_string()),
                },
            ),
            crate::error::Error::Cancelled { superseded_by, .. } => (
                409,
                RunError {
                    code: error.code().into(),
                    message: match superseded_by {
                        Some(by) => format!("replaced by run {by} within the debounce window"),
                        None => "the run was cancelled".into(),
                    },
                    node: None,
                    step: None,
                },
            ),
            crate::error::Error::WorkflowTimeout { limit, .. } => (
                504,
                RunError {
                    code: "workflow_timeout".into(),
                    message: format!(
                        "the run exceeded its workflow's time limit of {}",
                        crate::rules::format_duration(*limit)
                    ),
                    node: None,
                    step: None,
                },
            ),
            crate::error::Error::Journal(_) => (
                503,
                RunError {
                    code: "journal_unavailable".into(),
                    message:
                        "the run could not be recorded; it will resume when the journal is back"
                            .into(),
                    node: None,
                    step: None,
                },
            ),
            _ => (
                500,
                RunError {
                    code: "internal".into(),
                    message: "the run failed inside the runner; see its log".into(),
                    node: None,
                    step: None,
                },
            ),
        }
    }
}

/// A run's short form: where it stands and its outcome, without its input or timeline. The run
/// API serves the whole record (`journal::RunRecord`, whatever the store); this is the part
/// of it a client that only polls needs.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: RunId,
    /// The workflow.
    pub workflow: &'static str,
    /// Running, succeeded or failed.
    pub status: RunStatus,
    /// Start time, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// End time, milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// The output as JSON text, once succeeded.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "raw_json")]
    pub output: Option<Bytes>,
    /// The error, once failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
}

/// Embeds JSON text as JSON (it was produced by `serde_json`, so it is valid).
pub(crate) fn raw_json<S: serde::Serializer>(
    output: &Option<Bytes>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let text = output
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_else(|| "null".into());
    match serde_json::value::RawValue::from_string(text) {
        Ok(raw) => raw.serialize(s),
        // Stored text that is not JSON (a journal edited by hand, or damaged): served as a
        // string, so that one run never breaks a whole list.
        Err(_) => String::from_utf8_lossy(output.as_deref().unwrap_or(b"null")).serialize(s),
    }
}

/// [`raw_json`] for a value that is always present.
pub(crate) fn raw_json_required<S: serde::Serializer>(
    output: &Bytes,
    s: S,
) -> Result<S::Ok, S::Error> {
    raw_json(&Some(output.clone()), s)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
