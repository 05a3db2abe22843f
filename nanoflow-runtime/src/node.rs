//! The node contract: what `#[node]` implements for each annotated function.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;
use crate::graph::Graph;
use crate::run::RunCtx;

/// A value that can flow between nodes.
///
/// Every node input and output must be serializable, because the same value may be journaled,
/// sent to a node running in a container, or returned over HTTP.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot flow between nodes",
    label = "node inputs and outputs must be `Serialize + DeserializeOwned + Send + Sync + 'static`",
    note = "derive `serde::Serialize` and `serde::Deserialize` for `{Self}`, and use owned data (no references)"
)]
pub trait Data: Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Data for T {}

/// A unit of work in a workflow. Implemented by `#[node]`, never by hand.
///
/// The implementing type is a hidden zero-sized type with the same name as the annotated
/// function, so the function itself stays callable as a normal Rust function.
pub trait Node: Send + Sync + 'static {
    /// The single input the function takes.
    type Input: Data;
    /// The value the function returns (after unwrapping `Result<_, E>`).
    type Output: Data;
    /// The node's name as shown in graphs, logs and errors.
    const NAME: &'static str;
    /// Retry, timeout and isolation settings from `#[node(...)]`.
    const OPTIONS: NodeOptions;

    /// The durable state of a `#[node(state, key = field)]` node; `()` for the others.
    type State: Data + Default;
    /// Whether the node keeps durable keyed state.
    const STATEFUL: bool = false;

    /// `#[node(pure)]`: the node is deterministic and has no side effects (its output depends
    /// on its input alone). With the journal, its successors start without waiting for its
    /// output to be durable; the record follows in a later commit, and a run resumed after a
    /// crash that lost it computes the node again.
    const PURE: bool = false;

    /// Runs one attempt of the node.
    fn call(input: Self::Input) -> impl Future<Output = Result<Self::Output, NodeError>> + Send;

    /// The state key of an input (the `key` field of `#[node(state, key = field)]`).
    fn state_key(_input: &Self::Input) -> String {
        String::new()
    }

    /// Runs one attempt of a stateful node on `state`, returning the new state with the result.
    fn call_with_state(
        input: Self::Input,
        state: Self::State,
    ) -> impl Future<Output = (Result<Self::Output, NodeError>, Self::State)> + Send {
        async move { (Self::call(input).await, state) }
    }

    /// Makes a copy of an input for a retry: `Clone` when the type has it, a JSON round trip
    /// otherwise. Only called when a node may run more than once.
    fn duplicate(input: &Self::Input) -> Result<Self::Input, NodeError>;

    /// Runs this node as step `name` of the run `ctx`. A workflow used as a node overrides it
    /// to run its own graph inside the parent's run.
    #[doc(hidden)]
    #[inline]
    fn run_step<'a>(
        ctx: &'a RunCtx,
        defaults: &'static NodeOptions,
        name: &'static str,
        input: Self::Input,
    ) -> impl Future<Output = Result<Self::Output, Error>> + Send + 'a
    where
        Self: Sized,
    {
        ctx.step_named::<Self>(defaults, name, input)
    }

    /// The graph of a workflow used as a node; `None` for a `#[node]` function.
    #[doc(hidden)]
    fn subgraph() -> Option<&'static Graph> {
        None
    }
}

/// Proof that node `Self` takes a `Got` as input, where it expects `Takes`.
///
/// `#[node]` implements it only for `Got == Takes == Self::Input`, so an edge whose upstream output
/// differs from the node's input fails to compile with a message under the node's name.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot take `{Got}` as input: it takes `{Takes}`",
    label = "`{Self}` takes `{Takes}`, but the previous step gives `{Got}`",
    note = "the output of a step must be exactly the input type of the next one; a fan-in `(a, b) -> c` gives `c` a tuple in written order"
)]
pub trait Accepts<Got, Takes>: Node {
    /// Passes the value through unchanged (the types are equal).
    fn into_input(value: Got) -> Takes;
}

/// Where a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Inside the runner process (default): values move between nodes without serialization.
    #[default]
    Process,
    /// In its own container, built from the same code.
    Container,
}

impl Isolation {
    /// The name used on the command line and in `#[node(isolation = "...")]`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Isolation::Process => "process",
            Isolation::Container => "container",
        }
    }
}

/// Settings given in `#[node(...)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeOptions {
    /// How many times a failed attempt is retried (0: run once).
    pub retries: u32,
    /// The first retry delay; doubles at each retry, with jitter.
    pub backoff: Duration,
    /// The longest retry delay.
    pub max_backoff: Duration,
    /// The longest one attempt may take; past it the attempt fails as retryable.
    pub timeout: Option<Duration>,
    /// Where the node runs, when set explicitly.
    pub isolation: Option<Isolation>,
    /// Memory limit of the node's container, when set (`memory = "128MiB"`).
    pub memory_bytes: Option<u64>,
    /// CPU limit of the node's container in thousandths of a CPU, when set (`cpus = 0.5`).
    pub cpu_millis: Option<u32>,
    /// Which fields were written in `#[node(...)]` (bits `NodeOptions::RETRIES`, ...): those
    /// win over a workflow's `#[defaults(...)]`, the others take the workflow's value.
    pub explicit: u8,
}

impl NodeOptions {
    /// The defaults: no retries, 100 ms first backoff, 30 s maximum, no timeout.
    pub const DEFAULT: NodeOptions = NodeOptions {
        retries: 0,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(30),
        timeout: None,
        isolation: None,
        memory_bytes: None,
        cpu_millis: None,
        explicit: 0,
    };

    /// Bit of [`NodeOptions::explicit`]: `retries` was given.
    pub const RETRIES: u8 = 1;
    /// Bit of [`NodeOptions::explicit`]: `backoff` was given.
    pub const BACKOFF: u8 = 2;
    /// Bit of [`NodeOptions::explicit`]: `max_backoff` was given.
    pub const MAX_BACKOFF: u8 = 4;
    /// Bit of [`NodeOptions::explicit`]: `timeout` was given.
    pub const TIMEOUT: u8 = 8;
    /// Bit of [`NodeOptions::explicit`]: `isolation` was given.
    pub const ISOLATION: u8 = 16;

    /// With `retries` retries of a failed attempt (written explicitly: it wins over a
    /// workflow's defaults). Generated code builds options with these `const` setters, so that
    /// a new field never breaks an expansion.
    ///
    /// ```
    /// use std::time::Duration;
    /// use nanoflow_runtime::NodeOptions;
    /// const O: NodeOptions = NodeOptions::DEFAULT.with_retries(3).with_timeout(Duration::from_secs(2));
    /// assert_eq!(O.retries, 3);
    /// assert_eq!(O.or(&NodeOptions::DEFAULT.with_retries(9)).retries, 3);
    /// ```
    pub const fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self.explicit |= Self::RETRIES;
        self
    }

    /// With `backoff` as the first retry delay (explicit).
    pub const fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self.explicit |= Self::BACKOFF;
        self
    }

    /// With `max_backoff` as the longest retry delay (explicit).
    pub const fn with_max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self.explicit |= Self::MAX_BACKOFF;
        self
    }

    /// With `timeout` as the longest one attempt may take (explicit).
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self.explicit |= Self::TIMEOUT;
        self
    }

    /// Running where `isolation` says (explicit).
    pub const fn with_isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = Some(isolation);
        self.explicit |= Self::ISOLATION;
        self
    }

    /// With a memory limit for the node's container.
    pub const fn with_memory_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }

    /// With a CPU limit for the node's container, in thousandths of a CPU.
    pub const fn with_cpu_millis(mut self, millis: u32) -> Self {
        self.cpu_millis = Some(millis);
        self
    }

    /// These options, with every field not written explicitly taken from `defaults` (a
    /// workflow's `#[defaults(...)]`).
    pub const fn or(self, defaults: &NodeOptions) -> NodeOptions {
        let own = self.explicit;
        NodeOptions {
            retries: if own & Self::RETRIES != 0 {
                self.retries
            } else {
                defaults.retries
            },
            backoff: if own & Self::BACKOFF != 0 {
                self.backoff
            } else {
                defaults.backoff
            },
            max_backoff: if own & Self::MAX_BACKOFF != 0 {
                self.max_backoff
            } else {
                defaults.max_backoff
            },
            timeout: if own & Self::TIMEOUT != 0 {
                self.timeout
            } else {
                defaults.timeout
            },
            isolation: if own & Self::ISOLATION != 0 {
                self.isolation
            } else {
                defaults.isolation
            },
            memory_bytes: self.memory_bytes,
            cpu_millis: self.cpu_millis,
            explicit: self.explicit | defaults.explicit,
        }
    }
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Whether a failure may succeed if tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Retrying cannot help (bad input, business rule): never retried.
    Permanent,
    /// A transient failure: retried per the node's policy.
    Retryable,
    /// The attempt ran past the node's timeout: retried per the node's policy.
    Timeout,
    /// The node panicked: reported as a failure of that node, not retried.
    Panic,
}

impl ErrorKind {
    /// The stable code used in HTTP error bodies and the journal.
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::Permanent => "node_failed",
            ErrorKind::Retryable => "node_failed",
            ErrorKind::Timeout => "node_timeout",
            ErrorKind::Panic => "node_panicked",
        }
    }
}

/// The error a node returns.
///
/// Any `std::error::Error + Send + Sync + 'static` converts into a retryable `NodeError`, so `?`
/// works in node bodies. `NodeError` deliberately does not implement `std::error::Error` itself
/// (like `anyhow::Error`), which is what makes that blanket conversion possible.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeError {
    kind: ErrorKind,
    message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    /// A runtime fault's own code, in place of the kind's (`container_engine_unavailable`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "RuntimeCode::known"
    )]
    code: Option<RuntimeCode>,
}

/// The codes the runtime gives its own faults, in place of the kind's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RuntimeCode {
    /// The Docker Engine does not answer.
    ContainerEngineUnavailable,
    /// No container slot became free within the wait bound.
    ContainerPoolBusy,
}

impl RuntimeCode {
    const fn as_str(self) -> &'static str {
        match self {
            RuntimeCode::ContainerEngineUnavailable => "container_engine_unavailable",
            RuntimeCode::ContainerPoolBusy => "container_pool_busy",
        }
    }

    /// A stored code, `None` when this version does not know it.
    fn known<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Self>, D::Error> {
        let code = <Option<String> as serde::Deserialize>::deserialize(d)?;
        Ok(code.and_then(|c| {
            [Self::ContainerEngineUnavailable, Self::ContainerPoolBusy]
                .into_iter()
                .find(|k| k.as_str() == c)
        }))
    }
}

impl NodeError {
    /// A failure that retrying cannot fix: never retried.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
            status: None,
            code: None,
        }
    }

    /// A transient failure: retried per the node's `retries` and `backoff`.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Retryable,
            message: message.into(),
            status: None,
            code: None,
        }
    }

    pub(crate) fn timeout(after: Duration) -> Self {
        Self {
            kind: ErrorKind::Timeout,
            message: format!("timed out after {after:?}"),
            status: None,
            code: None,
        }
    }

    pub(crate) fn panic(message: String) -> Self {
        Self {
            kind: ErrorKind::Panic,
            message: format!("panicked: {message}"),
            status: None,
            code: None,
        }
    }

    /// Chooses the HTTP status a trigger answers with when this error fails the run
    /// (default 500, 504 for a timeout). Only 4xx and 5xx codes are kept.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        if (400..600).contains(&status) {
            self.status = Some(status);
        }
        self
    }

    /// Gives a runtime fault its own stable code (the container pool's faults have one).
    #[cfg_attr(not(feature = "container"), allow(dead_code))]
    pub(crate) fn with_code(mut self, code: RuntimeCode) -> Self {
        self.code = Some(code);
        self
    }

    /// The stable code of this error in HTTP error bodies and the journal: the kind's code
    /// (`node_failed`, ...), or a runtime fault's own (`container_engine_unavailable`).
    pub fn code(&self) -> &'static str {
        self.code.map_or(self.kind.code(), RuntimeCode::as_str)
    }

    /// Whether the failure is permanent, retryable, a timeout or a panic.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message given by the node.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status chosen with [`NodeError::with_status`], if any.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Retryable | ErrorKind::Timeout)
    }
}

impl fmt::Debug for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("status", &self.status)
            .field("code", &self.code)
            .finish()
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::Permanent => "permanent error",
            ErrorKind::Retryable => "retryable error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Panic => "panic",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for NodeError {
    fn from(error: E) -> Self {
        NodeError::retryable(error.to_string())
    }
}

/// The durable state of a stateful node for one key: `#[node(state, key = customer)]` on
/// `fn visits(v: Visit, state: &mut State<u64>) -> u64`. Read before the node runs and written
/// atomically with the node's recorded output; runs with the same key are serialized.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct State<T> {
    value: T,
}

impl<T> State<T> {
    /// Wraps a value (the node macro does this; tests may too).
    pub fn new(value: T) -> Self {
        Self { value }
    }

    /// The current value.
    pub fn get(&self) -> &T {
        &self.value
    }

    /// Replaces the value.
    pub fn set(&mut self, value: T) {
        self.value = value;
    }

    /// The value, to change in place.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.value
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> std::ops::Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::DerefMut for State<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}
