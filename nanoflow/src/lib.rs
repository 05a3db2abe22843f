#![doc = include_str!("../../README.md")]

/// The manual's pages under `docs/`: their Rust examples compile and run as doctests.
#[cfg(doctest)]
mod manual {
    #[doc = include_str!("../../docs/nodes.md")]
    mod nodes {}
    #[doc = include_str!("../../docs/workflows.md")]
    mod workflows {}
    #[doc = include_str!("../../docs/triggers.md")]
    mod triggers {}
    #[doc = include_str!("../../docs/durability.md")]
    mod durability {}
    #[doc = include_str!("../../docs/flow.md")]
    mod flow {}
    #[doc = include_str!("../../docs/deploys.md")]
    mod deploys {}
    #[cfg(feature = "testing")]
    #[doc = include_str!("../../docs/testing.md")]
    mod testing {}
    #[doc = include_str!("../../docs/containers.md")]
    mod containers {}
    #[doc = include_str!("../../docs/schemas.md")]
    mod schemas {}
    #[doc = include_str!("../../docs/runner.md")]
    mod runner {}
    #[doc = include_str!("../../docs/observability.md")]
    mod observability {}
    #[doc = include_str!("../../docs/operations.md")]
    mod operations {}
    #[doc = include_str!("../../docs/architecture.md")]
    mod architecture {}
}

/// The program's allocator: mimalloc (feature `mimalloc`, on by default; docs/operations.md,
/// "The memory allocator"). Without it, glibc's allocator took a quarter to a third of the
/// runtime's CPU in the queue-trigger benchmark, on the runs' futures that are too large for
/// its per-thread caches.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[doc(inline)]
pub use nanoflow_macros::{node, workflow};
/// Publishing to NATS JetStream (feature `nats`, on by default).
#[cfg(feature = "nats")]
pub use nanoflow_runtime::{dead_letter_subject, publish, publish_with_id, Published};
pub use nanoflow_runtime::{
    Accepts, AdminToken, Data, DbEvent, DbOp, DynWorkflow, Endpoint, Error, ErrorKind, Graph,
    InputError, InputErrorKind, Isolation, MapDef, Node, NodeError, NodeOptions, Overlap, RunCtx,
    RunId, RunStatus, RunSummary, Runner, ServeConfig, Server, SignalError, State, Step, StepKind,
    Tick, TraceParent, TriggerDef, Workflow,
};

#[cfg(feature = "container")]
pub use nanoflow_runtime::isolation;
pub use nanoflow_runtime::journal;
pub use nanoflow_runtime::observability;
pub use nanoflow_runtime::openapi;
pub use nanoflow_runtime::schema;
/// `schemars`, for `#[derive(JsonSchema)]` on node types (feature `schema`, on by default).
#[cfg(feature = "schema")]
pub use nanoflow_runtime::schemars;
/// The trait (and derive) that gives a type its JSON Schema (feature `schema`).
#[cfg(feature = "schema")]
pub use nanoflow_runtime::schemars::JsonSchema;
pub use nanoflow_runtime::store;
/// A test harness: a virtual clock and crash injection (feature `testing`).
#[cfg(feature = "testing")]
pub use nanoflow_runtime::testing;

/// Everything a workflow file needs: `use nanoflow::prelude::*;`.
pub mod prelude {
    #[doc(inline)]
    pub use nanoflow_macros::{node, workflow};
    pub use nanoflow_runtime::{DbEvent, DbOp, NodeError, Runner, State, Tick, Workflow};
}

#[doc(hidden)]
pub mod __private {
    pub use nanoflow_runtime::__private::*;
}
