//! The errors a workflow run, a runner or a trigger can return.

use std::fmt;

use crate::id::RunId;
use crate::node::NodeError;

/// Everything that can go wrong when running or serving workflows.
///
/// Runtime errors name the workflow, node, attempt and run id; HTTP clients only ever see the
/// stable code, the message and the run id (see [`Error::code`]).
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A node failed for good (after its retries): the run failed.
    #[error(
        "workflow `{workflow}` failed at node `{node}` (attempt {attempt}, run {run_id}): {error}"
    )]
    Node {
        /// The workflow that ran.
        workflow: &'static str,
        /// The step that failed (its alias when it has one; `score[3]` or `claims/pay` for a
        /// step inside a map or a sub-workflow). Owned when scoped, so that a long-running
        /// server keeps no name of every step that ever failed.
        node: std::borrow::Cow<'static, str>,
        /// The attempt that failed last, counting from 1.
        attempt: u32,
        /// The run.
        run_id: RunId,
        /// What the node reported.
        error: NodeError,
    },
    /// A run recorded by another build cannot resume on this one: a step it completed was
    /// removed, changed its output type or moved (issue 13). The run is parked as `blocked`.
    #[error("workflow `{workflow}` cannot resume run {run_id}: {message}")]
    GraphChanged {
        /// The workflow.
        workflow: &'static str,
        /// The recorded step that no longer fits (scoped, as recorded).
        step: std::borrow::Cow<'static, str>,
        /// The run.
        run_id: RunId,
        /// What changed, in words.
        message: String,
    },
    /// The run waits (for a signal, or a sleep's end): it holds no task until it is woken. Not
    /// a failure: the run stays recorded as `waiting`.
    #[error("run {run_id} of workflow `{workflow}` waits at step `{step}`")]
    Waiting {
        /// The workflow.
        workflow: &'static str,
        /// The run.
        run_id: RunId,
        /// The step it waits at (scoped, as recorded).
        step: std::borrow::Cow<'static, str>,
        /// When it is due to wake by itself (a sleep's end, a signal's timeout, the workflow's
        /// deadline), ms since the epoch; `None`: only a signal or a cancellation wakes it.
        due_ms: Option<u64>,
    },
    /// The run was cancelled (`POST /runs/{id}/cancel`, `runs cancel`), or replaced by a newer
    /// run within a debounce window (`superseded_by`).
    #[error("run {run_id} of workflow `{workflow}` was {}", match superseded_by { Some(by) => format!("replaced by run {by} within its debounce window"), None => "cancelled".to_owned() })]
    Cancelled {
        /// The workflow.
        workflow: &'static str,
        /// The run.
        run_id: RunId,
        /// The newer run that replaced it (debounce).
        superseded_by: Option<RunId>,
    },
    /// The run was dropped before anything of it was recorded: its idempotency key, claimed
    /// with its first record (a queue message's id), belongs to an earlier run. Not a
    /// failure: the earlier run is the message's run.
    #[error("run {run_id} of workflow `{workflow}` was dropped: its idempotency key belongs to run {original}")]
    Duplicate {
        /// The workflow.
        workflow: &'static str,
        /// The dropped run.
        run_id: RunId,
        /// The run that holds the key.
        original: RunId,
    },
    /// The whole run took longer than its workflow's `#[timeout(..)]`.
    #[error("run {run_id} of workflow `{workflow}` exceeded its time limit of {limit:?}")]
    WorkflowTimeout {
        /// The workflow.
        workflow: &'static str,
        /// The run.
        run_id: RunId,
        /// The limit.
        limit: std::time::Duration,
    },
    /// The input does not fit the workflow's input type.
    #[error("invalid input for workflow `{workflow}`: {error}")]
    InvalidInput {
        /// The workflow that was asked to run.
        workflow: &'static str,
        /// What is wrong, with the JSON path.
        error: InputError,
    },
    /// No workflow with this name is registered.
    #[error("unknown workflow `{0}`; `list` shows the registered workflows")]
    UnknownWorkflow(String),
    /// A setting or command line is not valid.
    #[error("{0}")]
    Config(String),
    /// The container engine cannot be reached, or an image or container operation failed.
    #[error("{0}")]
    Container(String),
    /// The journal cannot be opened, read or written.
    #[error("{0}")]
    Journal(String),
    /// Publishing to or consuming from a message queue (NATS) failed.
    #[error("{0}")]
    Queue(String),
    /// Publishing found no stream that stores the subject.
    #[error("{0}")]
    NoStream(String),
    /// Reading or writing a file or socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Shows the message (like `anyhow`), so `fn main() -> Result<(), nanoflow::Error>` prints
/// `Error: <message>` rather than a struct dump.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// A stable, machine-readable code for the error (used in HTTP error bodies).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Node { error, .. } => error.code(),
            Error::InvalidInput { .. } => "invalid_input",
            Error::GraphChanged { .. } => "graph_changed",
            Error::Waiting { .. } => "waiting",
            Error::Cancelled {
                superseded_by: Some(_),
                ..
            } => "debounced",
            Error::Cancelled { .. } => "cancelled",
            Error::WorkflowTimeout { .. } => "workflow_timeout",
            Error::Duplicate { .. } => "duplicate",
            Error::UnknownWorkflow(_) => "unknown_workflow",
            Error::Config(_) => "config",
            Error::Io { .. } => "io",
            Error::Journal(_) => "journal_unavailable",
            Error::Container(_) => "container",
            Error::Queue(_) => "queue_unavailable",
            Error::NoStream(_) => "no_stream",
        }
    }

    /// The node's error, when a node failed.
    pub fn node_error(&self) -> Option<&NodeError> {
        match self {
            Error::Node { error, .. } => Some(error),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Why a JSON input was refused before any run was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// Malformed JSON (`Syntax`) or JSON of the wrong shape (`Data`).
    pub kind: InputErrorKind,
    /// The parser's message.
    pub message: String,
    /// Where in the document: a JSON path like `items[2].qty` (`.` for the root).
    pub path: String,
    /// 1-based line of the error.
    pub line: usize,
    /// 1-based column of the error.
    pub column: usize,
}

/// The two ways an input can be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputErrorKind {
    /// Not JSON at all, or truncated.
    Syntax,
    /// Valid JSON that does not fit the input type.
    Data,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            InputErrorKind::Syntax => write!(
                f,
                "malformed JSON at line {} column {}: {}",
                self.line, self.column, self.message
            ),
            InputErrorKind::Data => write!(f, "at `{}`: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for InputError {}
