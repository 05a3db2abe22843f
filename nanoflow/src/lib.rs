#![doc = include_str!("../../README.md")]

#[doc(inline)]
pub use nanoflow_macros::{node, workflow};
pub use nanoflow_runtime::{
    Accepts, Data, Endpoint, Error, ErrorKind, Graph, InputError, InputErrorKind, Isolation,
    MapDef, Node, NodeError, NodeOptions, Overlap, RunCtx, RunId, RunStatus, RunSummary, Runner,
    ServeConfig, Server, State, Step, StepKind, Tick, TriggerDef, Workflow,
};

pub use nanoflow_runtime::journal;

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
