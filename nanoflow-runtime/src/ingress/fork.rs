//! `runs fork <run> --from <step>` (issue 13): a new run of the same workflow and input that
//! reuses the recorded outputs of the steps `<step>` depends on, and executes from `<step>` on.
//! It is journaled as a run of its own, linked to the original (`forked_from`), and resumes
//! like any recorded run: checked against this build's graph first.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;

use crate::error::Error;
use crate::graph::{Endpoint, Graph};
use crate::id::RunId;
use crate::journal::{Journal, NewRun, StepWrite};

use super::App;

/// The steps `step` depends on (whose outputs reach it), by name.
fn upstream_of(graph: &Graph, step: usize) -> BTreeSet<&'static str> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![step];
    while let Some(i) = todo.pop() {
        for (from, to) in &graph.edges {
            if let (Endpoint::Step(f), Endpoint::Step(t)) = (from, to) {
                if *t == i && seen.insert(graph.steps[*f].name) {
                    todo.push(*f);
                }
            }
        }
    }
    seen
}

impl App {
    /// Forks run `from_run` at step `from_step`: records the new run with the reused records,
    /// then drives it. Returns the new run's id and its task. `Error::Config` for what the
    /// caller asked wrong (no such run, workflow or step).
    pub(crate) async fn fork(
        self: &Arc<Self>,
        journal: &Journal,
        from_run: RunId,
        from_step: &str,
    ) -> Result<(RunId, tokio::task::JoinHandle<Result<Bytes, Error>>), Error> {
        let record = journal
            .get_run(from_run)
            .await?
            .ok_or_else(|| Error::Config(format!("no run `{from_run}` in the journal")))?;
        let wf = self
            .workflows
            .get(record.workflow.as_str())
            .ok_or_else(|| {
                Error::Config(format!(
                    "run `{from_run}` belongs to workflow `{}`, which this runner does not have",
                    record.workflow
                ))
            })?;
        let graph = wf.graph();
        let index = graph
            .steps
            .iter()
            .position(|s| s.name == from_step)
            .ok_or_else(|| {
                Error::Config(format!(
                    "workflow `{}` has no step `{from_step}`; steps: {}",
                    graph.name,
                    graph
                        .steps
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let reused = upstream_of(graph, index);
        let run_id = RunId::new();
        let now = crate::runs::now_ms();
        let steps: Vec<StepWrite> = record
            .timeline
            .iter()
            .filter(|a| a.status == "succeeded")
            .filter(|a| {
                let top = crate::fingerprint::unscoped(&a.step);
                let top = top.split('/').next().unwrap_or("");
                reused.contains(top)
            })
            .filter_map(|a| {
                Some(StepWrite {
                    run_id,
                    step: a.step.clone().into(),
                    attempt: a.attempt,
                    outcome: Ok(a.output.clone()?),
                    started_ms: now,
                    duration_us: 0,
                    state: None,
                    fingerprint: a.fingerprint,
                })
            })
            .collect();
        let run = NewRun {
            queued: None,
            run_id,
            workflow: graph.name,
            input: record.input.clone(),
            idempotency_key: None,
            fingerprint: Some(graph.fingerprint()),
        };
        journal.fork(run, from_run, steps).await?;
        tracing::info!(%run_id, forked_from = %from_run, from_step, workflow = graph.name, "run forked");
        let forked = journal
            .get_run(run_id)
            .await?
            .ok_or_else(|| Error::Journal(format!("the forked run `{run_id}` is not recorded")))?;
        match self.resume(forked).await? {
            Some(task) => Ok((run_id, task)),
            // Parked: the reused records do not fit this build's graph.
            None => Err(Error::GraphChanged {
                workflow: graph.name,
                step: from_step.to_owned().into(),
                run_id,
                message: format!(
                    "the forked run `{run_id}` reuses records that no longer fit this build's graph; it is blocked"
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Endpoint::*;
    use crate::graph::StepKind;

    #[test]
    fn upstream_follows_edges_back_not_siblings() {
        // a -> (b, c) -> d -> e
        let step = |name: &'static str| crate::graph::Step {
            name,
            node: name,
            input_type: "u64",
            output_type: "u64",
            options: crate::node::NodeOptions::DEFAULT,
            kind: StepKind::Node,
            call_json: |_, _| Box::pin(async { Err(crate::node::NodeError::permanent("no")) }),
            output_shape: None,
        };
        let g = Graph::new::<u64, u64>("g")
            .with_steps(["a", "b", "c", "d", "e"].map(step).to_vec())
            .with_edges(vec![
                (Input, Step(0)),
                (Step(0), Step(1)),
                (Step(0), Step(2)),
                (Step(1), Step(3)),
                (Step(2), Step(3)),
                (Step(3), Step(4)),
                (Step(4), Output),
            ]);
        assert_eq!(upstream_of(&g, 3), BTreeSet::from(["a", "b", "c"]));
        assert_eq!(upstream_of(&g, 1), BTreeSet::from(["a"]));
        assert!(upstream_of(&g, 0).is_empty());
    }
}
