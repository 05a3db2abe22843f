//! Replay of a recorded run through the current code (issue 13): the run's input is executed
//! in this process, journaled only in memory (no new run in the journal), and each step's
//! output is compared with the recorded one. Steps named in `stub` are not executed: they are
//! fed their recorded outputs, as a resumed run is (for nodes with side effects).
//!
//! What a replay cannot reproduce: stateful nodes start from their default state (stub them),
//! nodes run in-process even when they run in containers when served, and nothing chained
//! `after` the workflow starts.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::journal::{Journal, NewRun, RunRecord};
use crate::run::{Durable, RunCtx};
use crate::store::memory::MemoryStore;
use crate::workflow::DynWorkflow;

/// How a step's replayed output compares with the recorded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Equal JSON.
    Same,
    /// Both exist and differ (see [`StepReplay::diff`]).
    Differs,
    /// Only the replay has it (a step added since, or a branch taken only now).
    New,
    /// Only the recording has it (a step removed since, a branch not taken now, or a step the
    /// replay did not reach).
    Missing,
    /// Fed its recorded output, not executed (`--stub`).
    Stubbed,
}

impl Verdict {
    /// `same`, `differs`, `new`, `missing` or `stubbed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Same => "same",
            Verdict::Differs => "differs",
            Verdict::New => "new",
            Verdict::Missing => "missing",
            Verdict::Stubbed => "stubbed",
        }
    }
}

/// One difference inside a step's output: the JSON path, and the values there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// Where (`.` for the whole value, `total`, `items[2].qty`).
    pub path: String,
    /// The recorded value there (absent: `null` with `recorded_absent`).
    pub recorded: Option<Value>,
    /// The replayed value there.
    pub replayed: Option<Value>,
}

/// One step of a replay.
#[derive(Debug, Clone, Serialize)]
pub struct StepReplay {
    /// The step, scoped as recorded (`score[3]`, `payment_flow/charge`).
    pub step: String,
    /// How it compares.
    pub verdict: Verdict,
    /// The recorded output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded: Option<Value>,
    /// The replayed output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<Value>,
    /// What differs, when it differs (at most [`MAX_DIFFERENCES`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diff: Vec<Difference>,
}

/// Differences listed per step, at most.
pub const MAX_DIFFERENCES: usize = 20;

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    /// The recorded run.
    pub run_id: crate::id::RunId,
    /// Its workflow.
    pub workflow: String,
    /// Each recorded step, in the graph's order, then the new ones.
    pub steps: Vec<StepReplay>,
    /// The replay's own error, when the current code failed where it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether every step reproduced (same or stubbed) and the replay did not fail.
    pub reproduces: bool,
}

impl Replay {
    /// A table of the steps, one line each: `step  verdict`, with each difference below.
    pub fn table(&self) -> String {
        let width = self
            .steps
            .iter()
            .map(|s| s.step.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut out = format!("{:<width$}  result\n", "step");
        for s in &self.steps {
            out.push_str(&format!("{:<width$}  {}\n", s.step, s.verdict.as_str()));
            for d in &s.diff {
                let show = |v: &Option<Value>| match v {
                    Some(v) => v.to_string(),
                    None => "(absent)".to_owned(),
                };
                out.push_str(&format!(
                    "{:<width$}    {}: {} -> {}\n",
                    "",
                    d.path,
                    show(&d.recorded),
                    show(&d.replayed)
                ));
            }
        }
        if let Some(e) = &self.error {
            out.push_str(&format!("the replay failed: {e}\n"));
        }
        out.push_str(if self.reproduces {
            "reproduced\n"
        } else {
            "not reproduced\n"
        });
        out
    }
}

/// Replays `record` (a run of `wf`) through the current code; `stub`: steps fed their
/// recorded outputs instead of running (by name in the graph; every item of a map step).
pub async fn replay(
    wf: &dyn DynWorkflow,
    record: &RunRecord,
    stub: &[String],
) -> Result<Replay, Error> {
    let graph = wf.graph();
    for name in stub {
        if graph.fingerprints().step(name).is_none() {
            return Err(Error::Config(format!(
                "`--stub {name}`: workflow `{}` has no step `{name}`",
                graph.name
            )));
        }
    }
    let mut recorded = record.completed_steps();
    // In the graph's order. A timeline is ordered by start time, in milliseconds: steps that
    // started within the same millisecond come back in name order, not the order they ran.
    // Steps of a sub-workflow or a map keep their recorded order under their graph step.
    let position = |scoped: &str| {
        let base = crate::fingerprint::unscoped(scoped);
        let top = base.split('/').next().unwrap_or_default();
        graph
            .steps
            .iter()
            .position(|s| s.name == top)
            .unwrap_or(usize::MAX)
    };
    recorded.sort_by_key(|(step, _)| position(step));
    let is_stubbed = |scoped: &str| {
        stub.iter()
            .any(|s| crate::fingerprint::unscoped(scoped) == s.as_str())
    };
    let resumed: HashMap<String, Bytes> = recorded
        .iter()
        .filter(|(step, _)| is_stubbed(step))
        .cloned()
        .collect();
    let journal = Journal::new(MemoryStore::new());
    let ctx = RunCtx::durable(
        graph.name,
        record.run_id,
        Durable {
            waits: Default::default(),
            journal: journal.clone(),
            graph,
            resumed,
            pending_create: Mutex::new(crate::run::PendingCreate::new(
                Some(NewRun {
                    queued: None,
                    run_id: record.run_id,
                    workflow: graph.name,
                    input: record.input.clone(),
                    idempotency_key: None,
                    fingerprint: Some(graph.fingerprint()),
                }),
                None,
            )),
            deferred: Mutex::default(),
            downstream: Vec::new(),
        },
    )
    .with_state(Default::default());
    let future = wf
        .start(ctx, &record.input)
        .map_err(|error| Error::InvalidInput {
            workflow: graph.name,
            error,
        })?;
    let error = future.await.err().map(|e| e.to_string());
    let replayed = journal
        .get_run(record.run_id)
        .await?
        .map(|r| r.completed_steps())
        .unwrap_or_default();
    let parse = |b: &Bytes| serde_json::from_slice::<Value>(b).unwrap_or(Value::Null);
    let mut steps = Vec::new();
    for (step, bytes) in &recorded {
        let then = parse(bytes);
        let now = replayed
            .iter()
            .find(|(s, _)| s == step)
            .map(|(_, b)| parse(b));
        let (verdict, diff) = match &now {
            _ if is_stubbed(step) => (Verdict::Stubbed, Vec::new()),
            None => (Verdict::Missing, Vec::new()),
            Some(now) if *now == then => (Verdict::Same, Vec::new()),
            Some(now) => {
                let mut diff = Vec::new();
                json_diff(".", Some(&then), Some(now), &mut diff);
                (Verdict::Differs, diff)
            }
        };
        steps.push(StepReplay {
            step: step.clone(),
            verdict,
            recorded: Some(then),
            replayed: now,
            diff,
        });
    }
    for (step, bytes) in &replayed {
        if !recorded.iter().any(|(s, _)| s == step) {
            steps.push(StepReplay {
                step: step.clone(),
                verdict: Verdict::New,
                recorded: None,
                replayed: Some(parse(bytes)),
                diff: Vec::new(),
            });
        }
    }
    let reproduces = error.is_none()
        && steps
            .iter()
            .all(|s| matches!(s.verdict, Verdict::Same | Verdict::Stubbed));
    Ok(Replay {
        run_id: record.run_id,
        workflow: record.workflow.clone(),
        steps,
        error,
        reproduces,
    })
}

/// The paths where `a` and `b` differ, depth first, at most [`MAX_DIFFERENCES`].
fn json_diff(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Difference>) {
    if out.len() >= MAX_DIFFERENCES || a == b {
        return;
    }
    let join = |key: &str| {
        if path == "." {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                json_diff(&join(k), x.get(k), y.get(k), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                let at = if path == "." {
                    format!("[{i}]")
                } else {
                    format!("{path}[{i}]")
                };
                json_diff(&at, x.get(i), y.get(i), out);
            }
        }
        _ => out.push(Difference {
            path: path.to_owned(),
            recorded: a.cloned(),
            replayed: b.cloned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_name_paths_and_absent_values() {
        let a = serde_json::json!({"id": "x", "total": 3, "lines": [1, 2]});
        let b = serde_json::json!({"id": "x", "total": 4, "lines": [1], "extra": true});
        let mut out = Vec::new();
        json_diff(".", Some(&a), Some(&b), &mut out);
        let paths: Vec<&str> = out.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["extra", "lines[1]", "total"]);
        assert_eq!(out[1].replayed, None);
        assert_eq!(out[2].recorded, Some(serde_json::json!(3)));
        let mut whole = Vec::new();
        json_diff(
            ".",
            Some(&serde_json::json!(1)),
            Some(&serde_json::json!("1")),
            &mut whole,
        );
        assert_eq!(whole[0].path, ".");
    }
}
