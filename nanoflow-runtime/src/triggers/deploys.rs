//! The run API's actions on runs: `POST /runs/{id}/retry` (`?from_start=true` to forget what
//! the run recorded), `POST /runs/{id}/cancel` (any run that has not ended),
//! `POST /runs/{id}/signals/{name}` (issue 15), `POST /runs/{id}/replay` (`?stub=a,b`), `POST /runs/{id}/fork?from=step`. Answers are JSON: 202 with the run's location, or a 4xx with a stable code.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;

use super::http::{accepted, journal_unavailable, parse_run_id, run_not_found};
use crate::error::Error;
use crate::ingress::flow::Cancelling;
use crate::ingress::reply::error_response;
use crate::ingress::App;
use crate::journal::Journal;
use crate::run::RunId;
use crate::wait::SignalError;
use axum::body::Bytes;

fn no_journal(what: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "journal_disabled",
        &format!(
            "{what} needs the journal: its steps are recorded only there; start the runner without `--journal off`"
        ),
        |_| {},
    )
}

/// `POST /runs/{id}/retry[?from_start=true]`: re-drives a failed or blocked run from where it
/// stopped, or from its first step. A run that still cannot resume on this graph is parked
/// again and answered `409 graph_changed`.
pub(crate) async fn retry(app: &Arc<App>, id: &str, from_start: bool) -> Response {
    let run_id = match parse_run_id(id) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let Some(journal) = app.durable() else {
        return no_journal("re-driving a run");
    };
    let driven = if from_start {
        app.retry_from_start(journal, run_id).await
    } else {
        match journal.reopen(run_id).await {
            Ok(Some(record)) => app.resume(record).await,
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    };
    match driven {
        Ok(Some(_task)) => accepted(run_id),
        Ok(None) => not_driven(journal, run_id).await,
        Err(e) => journal_unavailable(&e),
    }
}

/// Why a retry drove nothing: no such run, a run neither failed nor blocked, or a run parked
/// again because it still does not fit.
async fn not_driven(journal: &Journal, run_id: RunId) -> Response {
    match journal.get_run(run_id).await {
        Ok(Some(r)) if r.status == crate::runs::RunStatus::Blocked => {
            let error = r.error.unwrap_or_default();
            error_response(
                StatusCode::CONFLICT,
                "graph_changed",
                error["message"].as_str().unwrap_or("the graph changed"),
                |body| {
                    body.insert("step".into(), error["step"].clone());
                    body.insert("run_id".into(), run_id.to_string().into());
                },
            )
        }
        Ok(Some(r)) => error_response(
            StatusCode::CONFLICT,
            "run_not_failed",
            &format!(
                "run `{run_id}` is {}; only failed runs (and blocked ones) can be retried",
                r.status.as_str()
            ),
            |_| {},
        ),
        Ok(None) => run_not_found(run_id),
        Err(e) => journal_unavailable(&e),
    }
}

/// `POST /runs/{id}/cancel`: ends a blocked run as failed with the error `cancelled`.
pub(crate) async fn cancel(app: &Arc<App>, id: &str) -> Response {
    let run_id = match parse_run_id(id) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let reply = |status: StatusCode, state: &str| {
        crate::ingress::reply::json_response(
            status,
            &serde_json::json!({"run_id": run_id, "status": state}),
        )
    };
    match app.cancel_run(run_id).await {
        Ok(Cancelling::Unknown) => run_not_found(run_id),
        Ok(Cancelling::Finished(status)) => error_response(
            StatusCode::CONFLICT,
            "run_finished",
            &format!(
                "run `{run_id}` is {} already; only a run that has not ended can be cancelled",
                status.as_str()
            ),
            |_| {},
        ),
        Ok(Cancelling::Ended) => reply(StatusCode::OK, "cancelled"),
        Ok(Cancelling::Stopping | Cancelling::Compensating(_)) => {
            reply(StatusCode::ACCEPTED, "cancelling")
        }
        Ok(Cancelling::Elsewhere) => error_response(
            StatusCode::CONFLICT,
            "running_elsewhere",
            &format!(
                "run `{run_id}` is running in another runner; cancel it through that runner's API"
            ),
            |_| {},
        ),
        Err(e) => journal_unavailable(&e),
    }
}

/// `POST /runs/{id}/signals/{name}` with the signal's value as JSON: `202` when delivered
/// (the run continues, or finds it when it reaches the step), `422` with the path when the
/// value does not fit the signal's type, `404` for an unknown run, `409` when the run waits
/// for no such signal, has ended, or had it delivered already.
pub(crate) async fn signal(app: &Arc<App>, id: &str, name: &str, body: Bytes) -> Response {
    let run_id = match parse_run_id(id) {
        Ok(r) => r,
        Err(response) => return response,
    };
    match app.deliver_signal(run_id, name, body).await {
        Ok(()) => crate::ingress::reply::json_response(
            StatusCode::ACCEPTED,
            &serde_json::json!({"run_id": run_id, "signal": name, "status": "delivered"}),
        ),
        Err(SignalError::UnknownRun(_)) => run_not_found(run_id),
        Err(e @ SignalError::NoSuchSignal { .. }) => {
            error_response(StatusCode::CONFLICT, "not_waiting", &e.to_string(), |_| {})
        }
        Err(e @ SignalError::Finished { .. }) => {
            error_response(StatusCode::CONFLICT, "run_finished", &e.to_string(), |_| {})
        }
        Err(e @ SignalError::AlreadyDelivered { .. }) => error_response(
            StatusCode::CONFLICT,
            "signal_delivered",
            &e.to_string(),
            |_| {},
        ),
        Err(SignalError::Invalid { signal, error }) => error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_signal",
            &format!("the value does not fit signal `{signal}`: {error}"),
            |e| {
                e.insert("path".into(), error.path.clone().into());
                if error.kind == crate::error::InputErrorKind::Syntax {
                    e.insert("line".into(), error.line.into());
                    e.insert("column".into(), error.column.into());
                }
            },
        ),
        Err(e) => journal_unavailable(&Error::Journal(e.to_string())),
    }
}

/// `POST /runs/{id}/replay[?stub=a,b]`: re-executes the run's input through this build's code
/// in this process (nothing recorded) and answers the per-step comparison
/// ([`crate::replay::Replay`]), `200` whether or not it reproduces.
pub(crate) async fn replay(app: &Arc<App>, id: &str, stub: Option<String>) -> Response {
    let run_id = match parse_run_id(id) {
        Ok(r) => r,
        Err(response) => return response,
    };
    // Runs kept in memory (`--journal off`) have their steps too: they replay as well.
    let journal = &app.journal;
    let record = match journal.get_run(run_id).await {
        Ok(Some(r)) => r,
        Ok(None) => return run_not_found(run_id),
        Err(e) => return journal_unavailable(&e),
    };
    let Some(wf) = app.workflows.get(record.workflow.as_str()) else {
        return error_response(
            StatusCode::CONFLICT,
            "unknown_workflow",
            &format!("this runner has no workflow `{}`", record.workflow),
            |_| {},
        );
    };
    let stub: Vec<String> = stub
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    match crate::replay::replay(&**wf, &record, &stub).await {
        Ok(report) => crate::ingress::reply::json_response(StatusCode::OK, &report),
        Err(Error::Config(message)) => {
            error_response(StatusCode::BAD_REQUEST, "invalid_stub", &message, |_| {})
        }
        Err(e @ Error::InvalidInput { .. }) => error_response(
            StatusCode::CONFLICT,
            "invalid_input",
            &e.to_string(),
            |_| {},
        ),
        Err(e) => journal_unavailable(&e),
    }
}

/// `POST /runs/{id}/fork?from=step`: a new run reusing the recorded outputs of the steps
/// `step` depends on, executing from `step` on; `202` with the new run's location.
pub(crate) async fn fork(app: &Arc<App>, id: &str, from: &str) -> Response {
    let run_id = match parse_run_id(id) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let Some(journal) = app.durable() else {
        return no_journal("forking a run");
    };
    match app.fork(journal, run_id, from).await {
        Ok((forked, _task)) => {
            let mut response = accepted(forked);
            if let Ok(value) = run_id.to_string().parse() {
                response.headers_mut().insert("x-forked-from", value);
            }
            response
        }
        Err(Error::Config(message)) if message.starts_with("no run") => run_not_found(run_id),
        Err(Error::Config(message)) => {
            error_response(StatusCode::BAD_REQUEST, "invalid_step", &message, |_| {})
        }
        Err(Error::GraphChanged {
            run_id: forked,
            message,
            ..
        }) => error_response(StatusCode::CONFLICT, "graph_changed", &message, |body| {
            body.insert("run_id".into(), forked.to_string().into());
        }),
        Err(e) => journal_unavailable(&e),
    }
}
