//! The runner of a node image: the binary `nanoflow-build` compiles with `--cfg nanoflow_node`.
//!
//! It serves one node on the container protocol and nothing else. `Runner` keeps only the
//! registered graphs in this build, so nothing reachable from `main` touches the engine, the
//! journal, the triggers, the HTTP server, the admin surface or the Docker client, and the
//! linker leaves all of them out: the image holds the node's code and the protocol server.

use crate::error::Error;
use crate::graph::Graph;
use crate::isolation::{serve_node_of, steps_in, IsolationMode};

/// Serves the node named by `NANOFLOW_NODE_SERVE`. Given the single argument `nodes` instead,
/// prints the nodes that get an image as JSON lines (`nanoflow-build` asks this way).
pub(super) async fn serve(graphs: &[&'static Graph]) -> Result<(), Error> {
    if let Some(served) = serve_node_of(graphs).await {
        return served;
    }
    let mut args = std::env::args().skip(1);
    if let (Some("nodes"), None) = (args.next().as_deref(), args.next()) {
        let mut out = String::new();
        for step in steps_in(graphs, IsolationMode::Container) {
            let line = serde_json::json!({
                "node": step.node,
                "input_type": step.input_type,
                "output_type": step.output_type,
            });
            out.push_str(&format!("{line}\n"));
        }
        print!("{out}");
        return Ok(());
    }
    Err(Error::Config(
        "this program is a node image's entrypoint: it serves the node named by \
         NANOFLOW_NODE_SERVE and has no command line"
            .into(),
    ))
}
