//! Chaining: `#[trigger(after = checkout)]` starts a workflow with the output of each run of
//! `checkout` that succeeds.
//!
//! With the journal, the downstream run is recorded in the same transaction as the upstream
//! run's success (see `RunCtx::finish_run`), under the idempotency key `after:<upstream run id>`
//! and an id derived from the upstream run's: a crash between the two loses nothing (the
//! recorded run resumes after a restart) and never starts it twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;

use super::{Admitted, App, Record, Refused, Submission};
use crate::error::Error;
use crate::run::RunId;
use crate::trigger::TriggerDef;
use crate::workflow::DynWorkflow;

/// For each workflow, the workflows its successful runs start.
pub(crate) type Downstream = BTreeMap<&'static str, Vec<&'static str>>;

/// Who starts whom, from the workflows' `after` triggers.
pub(crate) fn downstream(workflows: &BTreeMap<&'static str, Arc<dyn DynWorkflow>>) -> Downstream {
    let mut map = Downstream::new();
    for wf in workflows.values() {
        for trigger in &wf.graph().triggers {
            if let TriggerDef::After { workflow } = trigger {
                map.entry(*workflow).or_default().push(wf.graph().name);
            }
        }
    }
    map
}

/// Refuses an `after` naming a workflow this runner does not have, and a cycle of `after`s
/// (which `workflow!` reports at compile time only when it sees the whole cycle in one block).
pub(crate) fn check(workflows: &BTreeMap<&'static str, Arc<dyn DynWorkflow>>) -> Result<(), Error> {
    for wf in workflows.values() {
        let name = wf.graph().name;
        for trigger in &wf.graph().triggers {
            if let TriggerDef::After { workflow } = trigger {
                if !workflows.contains_key(workflow) {
                    return Err(Error::Config(format!(
                        "workflow `{name}` is triggered after workflow `{workflow}`, which is not registered with \
                         this runner; add `.workflow({workflow})` to the runner"
                    )));
                }
            }
        }
    }
    let next = downstream(workflows);
    // Depth-first search for a path that comes back to where it started.
    fn visit(
        node: &'static str,
        next: &Downstream,
        path: &mut Vec<&'static str>,
        done: &mut Vec<&'static str>,
    ) -> Option<Vec<&'static str>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if done.contains(&node) {
            return None;
        }
        path.push(node);
        for &n in next.get(node).map(Vec::as_slice).unwrap_or_default() {
            if let Some(cycle) = visit(n, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.push(node);
        None
    }
    let mut done = Vec::new();
    for &start in workflows.keys() {
        if let Some(cycle) = visit(start, &next, &mut Vec::new(), &mut done) {
            return Err(Error::Config(if cycle.len() == 2 {
                format!(
                    "workflow `{}` is triggered after itself (`#[trigger(after = {0})]`): each run would start \
                     another, forever; remove that trigger",
                    cycle[0]
                )
            } else {
                format!(
                    "`after` triggers form a cycle: {}; each run would start the next, forever; remove one of them",
                    cycle.join(" -> ")
                )
            }));
        }
    }
    Ok(())
}

pub(crate) use crate::id::{chain_key as key, chained_run_id as run_id};

/// Starts the runs that `upstream` (of `workflow`) succeeding with `output` triggers. With the
/// journal they are already recorded, with the upstream's success.
pub(crate) fn start(app: &Arc<App>, upstream: RunId, workflow: &'static str, output: &Bytes) {
    let Some(next) = app.downstream.get(workflow) else {
        return;
    };
    for &name in next {
        let Some(wf) = app.workflows.get(name).cloned() else {
            continue;
        };
        let (app, output) = (app.clone(), output.clone());
        tokio::spawn(async move {
            let Ok(permit) = app.limiter.clone().acquire_owned().await else {
                return;
            };
            let run_id = run_id(upstream, name);
            let submission = Submission {
                workflow: wf,
                input: output,
                run_id,
                key: Some(key(upstream)),
                trace_parent: None,
                // With a durable journal, written with the upstream's success; without it,
                // the key is claimed in the memory store.
                record: if app.durable().is_some() {
                    Record::Done
                } else {
                    Record::WithFirstStep
                },
            };
            match app.submit(submission).await {
                Ok(Admitted::New(run)) => {
                    tracing::debug!(%run_id, workflow = name, after = workflow, upstream_run = %upstream, "chained run started");
                    run.spawn(&app, permit);
                }
                Ok(Admitted::Existing(original)) => {
                    tracing::debug!(%original, workflow = name, upstream_run = %upstream, "chained run already started")
                }
                // `workflow!` checks the types; this is a workflow whose output JSON does not
                // read back as the same type (a hand-written `Serialize`).
                Err(Refused::Input(e)) => tracing::error!(
                    %run_id, workflow = name, after = workflow, upstream_run = %upstream, error = %e,
                    "cannot start the chained run: the output of `{workflow}` does not read back as the input of `{name}`"
                ),
                Err(Refused::Journal(e)) => tracing::error!(
                    %run_id, workflow = name, upstream_run = %upstream, error = %e,
                    "cannot start the chained run: the journal failed"
                ),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_distinct_and_keep_the_time() {
        let up = RunId::new();
        assert_eq!(run_id(up, "ship"), run_id(up, "ship"));
        assert_ne!(run_id(up, "ship"), run_id(up, "bill"));
        assert_ne!(run_id(up, "ship"), run_id(RunId::new(), "ship"));
        assert_eq!(run_id(up, "ship").as_u128() >> 80, up.as_u128() >> 80);
    }
}
