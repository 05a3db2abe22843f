#![doc = include_str!("../../README.md")]

#[doc(inline)]
pub use nanoflow_macros::{node, workflow};
pub use nanoflow_runtime::{
    Accepts, AdminToken, Data, Endpoint, Error, ErrorKind, Graph, InputError, InputErrorKind,
    Isolation, Node, NodeError, NodeOptions, Overlap, RunCtx, RunId, RunStatus, RunSummary, Runner,
    ServeConfig, Server, State, Step, Tick, TraceParent, TriggerDef, Workflow,
};

pub use nanoflow_runtime::journal;
pub use nanoflow_runtime::observability;

/// Everything a workflow file needs: `use nanoflow::prelude::*;`.
pub mod prelude {
    #[doc(inline)]
    pub use nanoflow_macros::{node, workflow};
    pub use nanoflow_runtime::{NodeError, Runner, State, Tick, Workflow};
}

#[doc(hidden)]
pub mod __private {
    pub use nanoflow_runtime::__private::*;
}
