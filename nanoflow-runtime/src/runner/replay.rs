//! The `runs` commands about deploys (issue 13): `runs replay`, and why a retry drove nothing.

use crate::error::Error;
use crate::journal::Journal;
use crate::run::RunId;
use crate::runs::RunStatus;

/// Why a retry drove nothing, as the command's error: the run is blocked again (the graph
/// still does not fit), its workflow is not in this program, it is neither failed nor blocked,
/// or there is no such run.
pub(super) async fn not_driven(journal: &Journal, run_id: RunId) -> Error {
    match journal.get_run(run_id).await {
        Ok(Some(r)) if r.status == RunStatus::Blocked => {
            let e = r.error.unwrap_or_default();
            Error::Config(format!(
                "run `{run_id}` is blocked (graph_changed at step `{}`): {}; retry it with `--from-start` or cancel it",
                e["step"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("")
            ))
        }
        Ok(Some(r)) if r.status == RunStatus::Running => Error::Config(format!(
            "run `{run_id}` belongs to workflow `{}`, which this program does not have",
            r.workflow
        )),
        Ok(Some(r)) => Error::Config(format!(
            "run `{run_id}` is {}; only failed runs (and blocked ones) can be retried",
            r.status.as_str()
        )),
        Ok(None) => Error::Config(format!("no run `{run_id}` in the journal")),
        Err(e) => e,
    }
}

/// `runs replay <id> [--stub a,b] [--json]`: prints the per-step comparison; an error (exit 1)
/// when the run does not reproduce.
pub(super) async fn replay(
    app: &crate::ingress::App,
    journal: &Journal,
    run_id: RunId,
    stub: &[String],
    json: bool,
) -> Result<(), Error> {
    let record = journal
        .get_run(run_id)
        .await?
        .ok_or_else(|| Error::Config(format!("no run `{run_id}` in the journal")))?;
    let wf = app.workflows.get(record.workflow.as_str()).ok_or_else(|| {
        Error::Config(format!(
            "run `{run_id}` belongs to workflow `{}`, which this program does not have",
            record.workflow
        ))
    })?;
    let report = crate::replay::replay(&**wf, &record, stub).await?;
    let text = if json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        )
    } else {
        report.table()
    };
    super::cli::print_stdout(&text);
    if report.reproduces {
        Ok(())
    } else {
        let off = report
            .steps
            .iter()
            .filter(|s| {
                !matches!(
                    s.verdict,
                    crate::replay::Verdict::Same | crate::replay::Verdict::Stubbed
                )
            })
            .count();
        Err(Error::Config(format!(
            "run `{run_id}` does not reproduce: {off} step(s) differ{}",
            if report.error.is_some() {
                ", and the replay failed"
            } else {
                ""
            }
        )))
    }
}
