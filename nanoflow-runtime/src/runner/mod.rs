//! The runner: the registered workflows and the command line that serves or runs them.

mod cli;
mod listen;
#[cfg(all(nanoflow_node, feature = "container"))]
mod node;
mod replay;
pub(crate) mod serve;

pub use crate::config::ServeConfig;
pub use serve::Server;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::sync::Arc;

use crate::error::Error;
use crate::workflow::{DynWorkflow, Workflow};

/// Registers workflows and serves them.
///
/// ```no_run
/// # async fn f() -> Result<(), nanoflow_runtime::Error> {
/// # use nanoflow_runtime::Runner;
/// Runner::new() /* .workflow(checkout).workflow(report) */ .serve().await
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Runner {
    pub(crate) workflows: BTreeMap<&'static str, Arc<dyn DynWorkflow>>,
    pub(crate) duplicate: Vec<&'static str>,
    /// In a node image (`cfg(nanoflow_node)`): the registered graphs, and nothing that runs a
    /// workflow, so the engine, journal, triggers and servers are left out of the binary.
    #[cfg(all(nanoflow_node, feature = "container"))]
    graphs: Vec<&'static crate::graph::Graph>,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("workflows", &self.workflows.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Runner {
    /// A runner with no workflows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a workflow. Its triggers are served by `serve`.
    #[must_use]
    pub fn workflow<W: Workflow>(mut self, workflow: W) -> Self {
        #[cfg(all(nanoflow_node, feature = "container"))]
        self.graphs.push(workflow.graph());
        #[cfg(not(all(nanoflow_node, feature = "container")))]
        if self.workflows.insert(W::NAME, Arc::new(workflow)).is_some() {
            self.duplicate.push(W::NAME);
        }
        self
    }

    /// The registered workflow called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn DynWorkflow>> {
        self.workflows.get(name)
    }

    /// Inside a node container (`NANOFLOW_NODE_SERVE` set): serves that node and never returns
    /// normally. Outside one: returns `None` at once. `serve()` does this by itself; a program
    /// whose `main` is not `serve()` (a test binary) calls it first, e.g. from a test named in
    /// `ContainerConfig::entrypoint_args`.
    #[cfg(feature = "container")]
    pub async fn serve_node_if_requested(&self) -> Option<Result<(), Error>> {
        let workflows: Vec<_> = self.workflows.values().cloned().collect();
        crate::isolation::serve_node_from_env(&workflows).await
    }

    /// Runs the command line from the process arguments: `serve` (the default), `run`, `list`,
    /// `graph`. Returns when the command is done (for `serve`: after a graceful shutdown).
    ///
    /// In a node image's binary (built by `nanoflow-build` with `--cfg nanoflow_node`), serves
    /// the node named by `NANOFLOW_NODE_SERVE` and nothing else.
    pub async fn serve(self) -> Result<(), Error> {
        #[cfg(all(nanoflow_node, feature = "container"))]
        {
            node::serve(&self.graphs).await
        }
        #[cfg(not(all(nanoflow_node, feature = "container")))]
        {
            #[cfg(feature = "container")]
            if let Some(served) = self.serve_node_if_requested().await {
                return served;
            }
            self.run_cli(std::env::args_os()).await
        }
    }

    /// Runs the command line from `args` (the first item is the program name).
    pub async fn run_cli<I, T>(self, args: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        cli::main(self, args).await
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        if let Some(name) = self.duplicate.first() {
            return Err(Error::Config(format!(
                "workflow `{name}` is registered twice with the runner"
            )));
        }
        crate::ingress::chain::check(&self.workflows)?;
        #[cfg(not(feature = "container"))]
        for wf in self.workflows.values() {
            check_isolation(wf.graph())?;
        }
        Ok(())
    }
}

/// Refuses a node asking for container isolation, in `graph` or in its sub-workflows, in a
/// build without the `container` feature.
#[cfg(not(feature = "container"))]
fn check_isolation(graph: &crate::graph::Graph) -> Result<(), Error> {
    for step in &graph.steps {
        if step.options.isolation == Some(crate::node::Isolation::Container) {
            return Err(Error::Config(format!(
                "node `{}` of workflow `{}` asks for `isolation = \"container\"`: enable nanoflow's \
                 `container` feature",
                step.name, graph.name
            )));
        }
        if let Some(sub) = step.subgraph() {
            check_isolation(sub)?;
        }
    }
    Ok(())
}
