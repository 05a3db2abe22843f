//! Database-event triggers on PostgreSQL: `#[trigger(postgres = "public.orders", on = "insert")]`.
//!
//! On start, nanoflow installs (idempotently) a schema `nanoflow` holding an outbox table, a
//! subscriptions table and a trigger function, and an `AFTER INSERT OR UPDATE OR DELETE` row
//! trigger on each watched table ([`INSTALL`] is the exact SQL). The trigger function writes one
//! outbox row per subscribed workflow in the writing transaction, and `pg_notify`s the workflow
//! as a wake-up hint (the outbox is also polled every second).
//!
//! Each workflow consumes its rows in outbox order: a batch is read `FOR UPDATE SKIP LOCKED`,
//! each event is recorded in the journal under the idempotency key
//! `postgres:<installation>:<outbox id>`, and only then are the rows deleted. A crash anywhere
//! loses nothing (undeleted rows are read again) and starts nothing twice (their keys are
//! already in the journal). Runs of one workflow run one at a time, in order.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures_util::StreamExt as _;
use serde_json::value::RawValue;
use tokio::sync::{watch, Notify};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::error::Error;
use crate::ingress::{Admitted, App, Record, Refused, Submission};
use crate::journal::{Created, FinishWrite, NewRun};
use crate::run::RunId;
use crate::runs::RunError;
use crate::triggers::{reconnect_delay, TriggerDef};
use crate::workflow::DynWorkflow;

/// What nanoflow installs in the database, run in one transaction under an advisory lock on
/// every start (each statement is idempotent). The row trigger itself is created per table.
pub(crate) const INSTALL: &str = r#"
CREATE SCHEMA IF NOT EXISTS nanoflow;

-- One row: this database's identity, part of every event's idempotency key (outbox ids start
-- again at 1 if the schema is dropped and installed again).
CREATE TABLE IF NOT EXISTS nanoflow.installation (
    id text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO nanoflow.installation (id)
    SELECT md5(random()::text || clock_timestamp()::text)
    WHERE NOT EXISTS (SELECT 1 FROM nanoflow.installation);

-- Which workflow (consumer) wants which operations of which table.
CREATE TABLE IF NOT EXISTS nanoflow.subscriptions (
    consumer text NOT NULL,
    table_name text NOT NULL,
    operations text[] NOT NULL,
    PRIMARY KEY (consumer, table_name)
);

-- One row per change and subscribed workflow, deleted once its run is journaled.
CREATE TABLE IF NOT EXISTS nanoflow.outbox (
    id bigserial PRIMARY KEY,
    consumer text NOT NULL,
    table_name text NOT NULL,
    operation text NOT NULL,
    old_row jsonb,
    new_row jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS outbox_consumer_id ON nanoflow.outbox (consumer, id);

CREATE OR REPLACE FUNCTION nanoflow.capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tbl text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    op text := lower(TG_OP);
BEGIN
    INSERT INTO nanoflow.outbox (consumer, table_name, operation, old_row, new_row)
    SELECT s.consumer, tbl, op,
           CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
           CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END
    FROM nanoflow.subscriptions s
    WHERE s.table_name = tbl AND op = ANY (s.operations);
    PERFORM pg_notify('nanoflow_outbox', s.consumer)
    FROM nanoflow.subscriptions s
    WHERE s.table_name = tbl AND op = ANY (s.operations);
    RETURN NULL;
END
$$;
"#;

/// Events read per transaction.
const BATCH: i64 = 100;

/// How often the outbox is read when no notification came (notifications are only a hint).
const POLL: Duration = Duration::from_secs(1);

/// Starts one consumer per database-triggered workflow.
pub(crate) fn start(
    app: &Arc<App>,
    url: &str,
    shutdown: &watch::Sender<bool>,
) -> Result<(), Error> {
    url.parse::<tokio_postgres::Config>().map_err(|e| {
        Error::Config(format!(
            "invalid PostgreSQL URL (`--database-url`, `NANOFLOW_DATABASE_URL`): {e}"
        ))
    })?;
    for wf in app.workflows.values() {
        for trigger in &wf.graph().triggers {
            if let TriggerDef::Postgres { table, on } = trigger {
                let sub = Subscription {
                    table,
                    on,
                    url: url.into(),
                };
                tokio::spawn(consume(app.clone(), wf.clone(), sub, shutdown.subscribe()));
            }
        }
    }
    Ok(())
}

struct Subscription {
    table: &'static str,
    on: &'static [&'static str],
    url: Arc<str>,
}

/// Consumes the workflow's events until shutdown, reconnecting after any failure.
async fn consume(
    app: Arc<App>,
    wf: Arc<dyn DynWorkflow>,
    sub: Subscription,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = wf.graph().name;
    let mut failures = 0u32;
    loop {
        let error = tokio::select! {
            e = consume_once(&app, &wf, &sub, &mut failures) => e,
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        };
        failures = failures.saturating_add(1);
        listening(&app, name, Err(error.clone()));
        let delay = reconnect_delay(failures);
        tracing::warn!(workflow = name, table = sub.table, error = %error, retry_in = ?delay, "database trigger interrupted; retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
    }
}

fn pg_error(context: &str, e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
            format!("{context}: {}{detail}", db.message())
        }
        None => format!("{context}: {e}"),
    }
}

/// `public.orders` -> `"public"."orders"`.
fn quoted_table(table: &str) -> String {
    let quote = |id: &str| format!("\"{}\"", id.replace('"', "\"\""));
    match table.split_once('.') {
        Some((schema, name)) => format!("{}.{}", quote(schema), quote(name)),
        None => format!("\"public\".{}", quote(table)),
    }
}

/// Installs the outbox, the capture trigger on the table and the workflow's subscription.
/// Returns the installation id.
async fn install(client: &Client, name: &str, sub: &Subscription) -> Result<String, String> {
    let context = format!(
        "installing the outbox and the capture trigger on `{}` for workflow `{name}`",
        sub.table
    );
    // The watched table is locked first: writers to it lock it, then the outbox (from the
    // capture trigger); taking the locks in the same order means an install racing with writes
    // waits instead of deadlocking.
    let table = quoted_table(sub.table);
    let sql = format!(
        "BEGIN;
         SELECT pg_advisory_xact_lock(hashtext('nanoflow.install'));
         LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE;
         {INSTALL}
         CREATE OR REPLACE TRIGGER nanoflow_capture
             AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION nanoflow.capture();
         COMMIT;"
    );
    if let Err(e) = client.batch_execute(&sql).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(pg_error(&context, e));
    }
    let on: Vec<&str> = sub.on.to_vec();
    client
        .execute(
            "INSERT INTO nanoflow.subscriptions (consumer, table_name, operations) VALUES ($1, $2, $3)
             ON CONFLICT (consumer, table_name) DO UPDATE SET operations = EXCLUDED.operations",
            &[&name, &sub.table, &on],
        )
        .await
        .map_err(|e| pg_error(&context, e))?;
    let row = client
        .query_one("SELECT id FROM nanoflow.installation", &[])
        .await
        .map_err(|e| pg_error(&context, e))?;
    Ok(row.get(0))
}

/// One connection's life: install, listen, and consume until something fails.
async fn consume_once(
    app: &Arc<App>,
    wf: &Arc<dyn DynWorkflow>,
    sub: &Subscription,
    failures: &mut u32,
) -> String {
    let name = wf.graph().name;
    let (mut client, mut connection) = match tokio_postgres::connect(&sub.url, NoTls).await {
        Ok(c) => c,
        Err(e) => return pg_error("connecting to PostgreSQL", e),
    };
    // The connection is driven here, so that notifications reach the consumer.
    let wake = Arc::new(Notify::new());
    let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<String>();
    let waker = wake.clone();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) if n.payload() == name => waker.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    let _ = closed_tx.send(pg_error("the PostgreSQL connection failed", e));
                    return;
                }
            }
        }
        let _ = closed_tx.send("the PostgreSQL connection closed".into());
    });
    let installation = match install(&client, name, sub).await {
        Ok(id) => id,
        Err(e) => return e,
    };
    // Deleting consumed rows need not wait for a WAL flush: a lost delete only means the event
    // is read again, and its key is already in the journal.
    if let Err(e) = client
        .batch_execute("LISTEN nanoflow_outbox; SET synchronous_commit = off")
        .await
    {
        return pg_error("listening for outbox notifications", e);
    }
    *failures = 0;
    listening(app, name, Ok(()));
    tracing::info!(workflow = name, table = sub.table, on = ?sub.on, "database trigger listening");
    loop {
        match consume_batch(app, wf, &mut client, &installation).await {
            Ok(0) => {}
            Ok(_) => continue,
            Err(e) => return e,
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
            reason = &mut closed => return reason.unwrap_or_else(|_| "the PostgreSQL connection closed".into()),
        }
    }
}

/// Notes whether `workflow`'s database trigger listens (for `GET /readyz`).
fn listening(app: &App, workflow: &'static str, state: Result<(), String>) {
    app.services
        .listeners
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(workflow, state);
}

/// Whether every database trigger of this runner listens: `None` without any configured.
pub(crate) fn readiness(app: &App) -> Option<Result<(), String>> {
    app.config.database_url.as_ref()?;
    let expected: Vec<&'static str> = app
        .workflows
        .values()
        .filter(|wf| {
            wf.graph()
                .triggers
                .iter()
                .any(|t| matches!(t, TriggerDef::Postgres { .. }))
        })
        .map(|wf| wf.graph().name)
        .collect();
    if expected.is_empty() {
        return None;
    }
    let listeners = app
        .services
        .listeners
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    for workflow in expected {
        match listeners.get(workflow) {
            Some(Ok(())) => {}
            Some(Err(why)) => return Some(Err(format!("`{workflow}`: {why}"))),
            None => {
                return Some(Err(format!(
                    "`{workflow}`: its listener is being installed"
                )))
            }
        }
    }
    Some(Ok(()))
}

/// An outbox row, as the workflow's first node receives it (`DbEvent<Row>` in JSON).
#[derive(serde::Serialize)]
struct Event<'a> {
    id: i64,
    table: &'a str,
    operation: &'a str,
    old: Option<&'a RawValue>,
    new: Option<&'a RawValue>,
    at_ms: i64,
}

/// Reads, journals and runs up to one batch of events; returns how many there were.
async fn consume_batch(
    app: &Arc<App>,
    wf: &Arc<dyn DynWorkflow>,
    client: &mut Client,
    installation: &str,
) -> Result<usize, String> {
    let name = wf.graph().name;
    let tx = client
        .transaction()
        .await
        .map_err(|e| pg_error("starting a transaction", e))?;
    let rows = tx
        .query(
            "SELECT id, table_name, operation, old_row::text, new_row::text,
                    (extract(epoch FROM created_at) * 1000)::bigint
             FROM nanoflow.outbox WHERE consumer = $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&name, &BATCH],
        )
        .await
        .map_err(|e| pg_error("reading the outbox", e))?;
    if rows.is_empty() {
        tx.commit()
            .await
            .map_err(|e| pg_error("reading the outbox", e))?;
        return Ok(0);
    }
    let count = rows.len();
    // Each event's submission; all submitted at once, so one group commit records the batch.
    let mut submissions = Vec::with_capacity(count);
    // A journal write that failed: the event stays in the outbox, read again after a backoff.
    let mut journal_failed = None;
    let mut done: Vec<i64> = Vec::with_capacity(count);
    for row in &rows {
        let id: i64 = row.get(0);
        let old: Option<String> = row.get(3);
        let new: Option<String> = row.get(4);
        fn raw(text: &Option<String>) -> Option<&RawValue> {
            text.as_deref().and_then(|t| serde_json::from_str(t).ok())
        }
        let event = Event {
            id,
            table: row.get(1),
            operation: row.get(2),
            old: raw(&old),
            new: raw(&new),
            at_ms: row.get(5),
        };
        let input = Bytes::from(
            serde_json::to_vec(&event).map_err(|e| format!("encoding event {id}: {e}"))?,
        );
        let key = format!("postgres:{installation}:{id}");
        submissions.push((
            id,
            Submission {
                workflow: wf.clone(),
                input,
                run_id: RunId::new(),
                key: Some(key),
                trace_parent: None,
                record: Record::Now,
            },
        ));
    }
    let admitted = futures_util::future::join_all(submissions.into_iter().map(|(id, s)| {
        let (run_id, key, input) = (s.run_id, s.key.clone().unwrap_or_default(), s.input.clone());
        async move { (id, run_id, key, input, app.submit(s).await) }
    }))
    .await;
    let mut runs = Vec::with_capacity(count);
    for (id, run_id, key, input, admitted) in admitted {
        match admitted {
            Ok(Admitted::New(run)) => {
                done.push(id);
                runs.push(run);
            }
            Ok(Admitted::Existing(original)) => {
                tracing::debug!(workflow = name, event = id, %original, "database event already started a run");
                done.push(id);
            }
            Err(Refused::Input(error)) => {
                // The row does not fit the workflow's `Row` type: a failed run is the dead letter.
                tracing::warn!(workflow = name, event = id, error = %error, "database event does not fit the workflow's input; recording it as a failed run");
                match dead_letter(app, name, run_id, key, input, &error.to_string()).await {
                    Ok(()) => done.push(id),
                    Err(e) => journal_failed = Some(e.to_string()),
                }
            }
            Err(Refused::Journal(e)) => journal_failed = Some(e.to_string()),
        }
    }
    // The recorded runs start now, one at a time in outbox order, while the consumed rows are
    // deleted: recorded runs always run, whatever happens to the delete.
    let run_all = async {
        for run in runs {
            let Ok(permit) = app.limiter.clone().acquire_owned().await else {
                return;
            };
            let _ = run.spawn(app, permit).await;
        }
    };
    let delete = async {
        tx.execute("DELETE FROM nanoflow.outbox WHERE id = ANY($1)", &[&done])
            .await
            .map_err(|e| pg_error("deleting consumed outbox rows", e))?;
        tx.commit()
            .await
            .map_err(|e| pg_error("deleting consumed outbox rows", e))
    };
    let deleted = if app.durable().is_some() {
        tokio::join!(run_all, delete).1
    } else {
        // Without a journal only the outbox remembers an event: delete it once its run ended.
        run_all.await;
        delete.await
    };
    deleted?;
    match journal_failed {
        Some(e) => Err(format!("cannot record events in the journal: {e}")),
        None => Ok(count),
    }
}

/// Records an event that cannot start its workflow as a failed run (once per event).
async fn dead_letter(
    app: &App,
    workflow: &'static str,
    run_id: RunId,
    key: String,
    input: Bytes,
    error: &str,
) -> Result<(), Error> {
    let Some(journal) = app.durable() else {
        return Ok(());
    };
    let run = NewRun {
        queued: None,
        run_id,
        workflow,
        input,
        idempotency_key: Some(key),
        fingerprint: None,
    };
    if journal.create_run(run).await? != Created::New {
        return Ok(());
    }
    let outcome = Err(RunError {
        code: "invalid_input".into(),
        message: format!(
            "the database event does not fit the input of workflow `{workflow}`: {error}"
        ),
        node: None,
        step: None,
    });
    match journal
        .finish(
            FinishWrite {
                run_id,
                outcome,
                chained: Vec::new(),
            },
            None,
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::Journal(format!("journal write failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_quoted() {
        assert_eq!(quoted_table("public.orders"), "\"public\".\"orders\"");
        assert_eq!(quoted_table("Orders"), "\"public\".\"Orders\"");
    }
}
