//! Runs that cannot resume on this build's graph (issue 13): checked before a recorded run
//! resumes (restart, re-drive), parked as `blocked` with the error `graph_changed`, and acted
//! on later: retried from the start, or cancelled.

use std::time::Duration;

use crate::error::Error;
use crate::graph::Graph;
use crate::journal::{FinishWrite, Journal, RunRecord};
use crate::runs::RunError;

use super::App;

impl App {
    /// The workflow that resumes `record`: the one it was started as, unless its graph has
    /// changed since and a workflow kept with `#[finishes(..)]` has the graph the run was
    /// started with (the same fingerprint): then that one finishes it.
    pub(crate) fn workflow_for(
        &self,
        record: &RunRecord,
    ) -> Option<std::sync::Arc<dyn crate::workflow::DynWorkflow>> {
        let current = self.workflows.get(record.workflow.as_str());
        let started_with = record.fingerprint;
        if started_with.is_none() || current.map(|wf| wf.graph().fingerprint()) == started_with {
            return current.cloned();
        }
        self.workflows
            .values()
            .find(|wf| {
                let g = wf.graph();
                g.finishes() == Some(record.workflow.as_str())
                    && Some(g.fingerprint()) == started_with
            })
            .or(current)
            .cloned()
    }

    /// Checks what `record` completed against `graph`'s fingerprints; when a step was removed,
    /// changed its output type or moved, records the run as `blocked` (durably) and returns
    /// `true`: the run must not resume.
    pub(crate) async fn park_if_changed(
        &self,
        journal: &Journal,
        graph: &'static Graph,
        record: &RunRecord,
    ) -> Result<bool, Error> {
        let Err(changed) = graph.fingerprints().check(record.completed_prints()) else {
            return Ok(false);
        };
        let error = RunError::graph_changed(&changed);
        journal
            .finish(
                FinishWrite {
                    run_id: record.run_id,
                    outcome: Err(error),
                    chained: Vec::new(),
                },
                None,
            )
            .await
            .map_err(|e| Error::Journal(format!("journal write failed: {e}")))?;
        // Counted as a run this process took up and parked at once.
        self.observe.run_started(record.run_id, graph.name);
        self.observe.run_finished(
            record.run_id,
            graph.name,
            Duration::ZERO,
            &Err(Error::GraphChanged {
                workflow: graph.name,
                step: changed.step.clone().into(),
                run_id: record.run_id,
                message: changed.message.clone(),
            }),
        );
        tracing::warn!(
            run_id = %record.run_id, workflow = graph.name, step = %changed.step,
            change = changed.change.as_str(), message = %changed.message,
            "run parked as blocked: the graph changed under it; retry it from the start or cancel it"
        );
        Ok(true)
    }

    /// Retries a failed or blocked run from its first step, forgetting what it recorded;
    /// `Ok(None)` when there is no such run.
    pub(crate) async fn retry_from_start(
        self: &std::sync::Arc<Self>,
        journal: &Journal,
        run_id: crate::id::RunId,
    ) -> Result<Option<tokio::task::JoinHandle<Result<axum::body::Bytes, Error>>>, Error> {
        let Some(record) = journal.get_run(run_id).await? else {
            return Ok(None);
        };
        let fingerprint = self
            .workflows
            .get(record.workflow.as_str())
            .map(|wf| wf.graph().fingerprint());
        if !journal.reset(run_id, fingerprint).await? {
            return Ok(None);
        }
        let Some(record) = journal.get_run(run_id).await? else {
            return Ok(None);
        };
        self.resume(record).await
    }
}
