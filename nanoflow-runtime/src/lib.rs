//! The nanoflow runtime: everything that runs a workflow.
//!
//! Users depend on the `nanoflow` facade, which re-exports what is public here. This crate holds
//! the node and workflow contracts (`Node`, `Accepts`, `Workflow`), the in-process graph executor,
//! the runner with its command line, and the triggers.

pub mod admin;
mod config;
pub mod error;
pub mod fingerprint;
pub mod graph;
mod id;
mod ingress;
#[cfg(feature = "container")]
pub mod isolation;
pub mod journal;
mod json;
pub mod map;
pub mod node;
pub mod observability;
pub mod replay;
mod rules;
pub mod run;
pub mod runner;
pub mod runs;
pub mod schema;
mod state;
mod stats;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod trigger;
pub mod triggers;
pub mod wait;
pub mod workflow;

pub use config::AdminToken;
pub use error::Error;
pub use graph::{Endpoint, Graph, Limit, Limits, MapDef, SignalDef, Step, StepKind};
pub use node::{Accepts, Data, ErrorKind, Isolation, Node, NodeError, NodeOptions, State};
pub use observability::TraceParent;
pub use run::{RunCtx, RunId};
pub use runner::{Runner, ServeConfig, Server};
pub use runs::{RunStatus, RunSummary};
/// The `schemars` crate, whose `JsonSchema` derive gives a node type its JSON Schema.
#[cfg(feature = "schema")]
pub use schemars;
pub use triggers::openapi;
#[cfg(feature = "nats")]
pub use triggers::queue::{dead_letter_subject, publish, publish_with_id, Published};
pub use triggers::{DbEvent, DbOp, Overlap, Tick, TriggerDef};
pub use wait::SignalError;
pub use workflow::{DynWorkflow, InputError, InputErrorKind, Workflow};

/// Support for the macros' expansions. Not a public API.
#[doc(hidden)]
pub mod __private;
