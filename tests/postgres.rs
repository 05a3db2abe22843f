//! Database-event triggers against a real PostgreSQL (`NANOFLOW_DATABASE_URL`), each test in a
//! database of its own: typed events in order, the `on` filter, events written while the runner
//! is stopped, a replayed outbox row, and a row that does not fit the workflow's type.
#![allow(missing_docs)]

#[path = "support/services.rs"]
mod services;
#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nanoflow::prelude::*;
use nanoflow::{ServeConfig, Server};
use serde::{Deserialize, Serialize};
use support::get;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRow {
    pub id: i64,
    pub customer: String,
    pub total_cents: i64,
    pub status: String,
}

static ORDER_EVENTS: Mutex<Vec<DbEvent<OrderRow>>> = Mutex::new(Vec::new());
#[node]
fn on_order(e: DbEvent<OrderRow>) -> String {
    ORDER_EVENTS.lock().unwrap().push(e.clone());
    let row = e.new.or(e.old).unwrap();
    format!("{} {}", e.operation.as_str(), row.id)
}
static DELETE_EVENTS: Mutex<Vec<DbEvent<OrderRow>>> = Mutex::new(Vec::new());
#[node]
fn on_delete(e: DbEvent<OrderRow>) -> i64 {
    DELETE_EVENTS.lock().unwrap().push(e.clone());
    e.old.unwrap().id
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shipment {
    pub id: i64,
    pub carrier: String,
}
static SHIPMENTS: Mutex<Option<HashMap<i64, u32>>> = Mutex::new(None);
#[node]
async fn on_shipment(e: DbEvent<Shipment>) -> i64 {
    let id = e.new.unwrap().id;
    *SHIPMENTS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(id)
        .or_default() += 1;
    tokio::time::sleep(Duration::from_millis(2)).await;
    id
}
fn shipments() -> HashMap<i64, u32> {
    SHIPMENTS.lock().unwrap().clone().unwrap_or_default()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Note {
    pub id: i64,
    pub text: String,
}
#[node]
fn on_note(e: DbEvent<Note>) -> String {
    e.new.unwrap().text
}

workflow! {
    /// Every change of an order.
    #[trigger(postgres = "public.orders", on = "insert|update|delete")]
    pg_orders: on_order;

    /// Only deletions, from the same table (`public` is the default schema).
    #[trigger(postgres = "orders", on = "delete")]
    pg_deletes: on_delete;

    #[trigger(postgres = "public.shipments", on = "insert")]
    pg_shipments: on_shipment;

    #[trigger(postgres = "public.notes")]
    pg_notes: on_note;
}

fn temp_journal() -> PathBuf {
    std::env::temp_dir()
        .join(format!("nanoflow-pg-{}", nanoflow::RunId::new()))
        .join("journal.db")
}

async fn start(runner: Runner, database: &str, journal: &Path) -> Server {
    runner
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(journal.to_path_buf()),
            database_url: Some(database.to_owned()),
            ..ServeConfig::default()
        })
        .await
        .expect("server starts")
}

/// Waits until `workflow` is subscribed (its trigger is installed and listening).
async fn subscribed(db: &tokio_postgres::Client, workflow: &str) {
    services::eventually(20, &format!("the subscription of `{workflow}`"), || async {
        let row = db
            .query_opt(
                "SELECT 1 FROM nanoflow.subscriptions WHERE consumer = $1",
                &[&workflow],
            )
            .await
            .ok()?;
        row.map(|_| ())
    })
    .await;
}

async fn runs(server: &Server, workflow: &str) -> Vec<serde_json::Value> {
    let r = get(
        server.local_addr(),
        &format!("/runs?workflow={workflow}&limit=1000"),
    )
    .await;
    r.json()["runs"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_updates_and_deletes_arrive_typed_and_in_order() {
    let Some(url) = services::postgres() else {
        return;
    };
    let database = services::fresh_database(&url).await;
    let db = services::connect_db(&database).await;
    db.batch_execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, total_cents bigint NOT NULL, status text NOT NULL)")
        .await
        .unwrap();
    let server = start(
        Runner::new().workflow(pg_orders).workflow(pg_deletes),
        &database,
        &temp_journal(),
    )
    .await;
    subscribed(&db, "pg_orders").await;
    subscribed(&db, "pg_deletes").await;

    db.batch_execute("INSERT INTO orders VALUES (1, 'ada', 500, 'new')")
        .await
        .unwrap();
    db.batch_execute("UPDATE orders SET status = 'paid' WHERE id = 1")
        .await
        .unwrap();
    db.batch_execute("DELETE FROM orders WHERE id = 1")
        .await
        .unwrap();
    // Several changes in one transaction, in statement order.
    db.batch_execute(
        "BEGIN; INSERT INTO orders VALUES (2, 'bob', 700, 'new'); UPDATE orders SET total_cents = 900 WHERE id = 2; COMMIT;",
    )
    .await
    .unwrap();

    let events = services::eventually(20, "five order events", || async {
        let events = ORDER_EVENTS.lock().unwrap().clone();
        (events.len() >= 5).then_some(events)
    })
    .await;
    let order = |id, total_cents, status: &str| OrderRow {
        id,
        customer: if id == 1 { "ada" } else { "bob" }.into(),
        total_cents,
        status: status.into(),
    };
    let seen: Vec<(DbOp, Option<OrderRow>, Option<OrderRow>)> = events
        .iter()
        .map(|e| (e.operation, e.old.clone(), e.new.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (DbOp::Insert, None, Some(order(1, 500, "new"))),
            (
                DbOp::Update,
                Some(order(1, 500, "new")),
                Some(order(1, 500, "paid"))
            ),
            (DbOp::Delete, Some(order(1, 500, "paid")), None),
            (DbOp::Insert, None, Some(order(2, 700, "new"))),
            (
                DbOp::Update,
                Some(order(2, 700, "new")),
                Some(order(2, 900, "new"))
            ),
        ]
    );
    assert!(
        events.windows(2).all(|w| w[0].id < w[1].id),
        "outbox ids increase: {events:?}"
    );
    assert!(events
        .iter()
        .all(|e| e.table == "public.orders" && e.at_ms > 1_700_000_000_000));

    // The deletions-only workflow saw the one delete.
    let deletes = services::eventually(10, "the delete event", || async {
        let d = DELETE_EVENTS.lock().unwrap().clone();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].operation, DbOp::Delete);

    // Each event is one journaled run, keyed by its outbox row.
    let all = services::eventually(10, "five finished runs", || async {
        let all = runs(&server, "pg_orders").await;
        (all.len() == 5 && all.iter().all(|r| r["status"] == "succeeded")).then_some(all)
    })
    .await;
    assert!(all.iter().all(|r| r["idempotency_key"]
        .as_str()
        .unwrap()
        .starts_with("postgres:")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left: i64 = db
        .query_one("SELECT count(*) FROM nanoflow.outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "consumed events are deleted from the outbox");
    assert_eq!(ORDER_EVENTS.lock().unwrap().len(), 5, "no event twice");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_while_the_runner_is_stopped_run_after_restart_and_none_twice() {
    let Some(url) = services::postgres() else {
        return;
    };
    let database = services::fresh_database(&url).await;
    let db = services::connect_db(&database).await;
    db.batch_execute("CREATE TABLE shipments (id bigint PRIMARY KEY, carrier text NOT NULL)")
        .await
        .unwrap();
    let journal = temp_journal();

    let server = start(Runner::new().workflow(pg_shipments), &database, &journal).await;
    subscribed(&db, "pg_shipments").await;
    db.batch_execute("INSERT INTO shipments SELECT g, 'ups' FROM generate_series(1, 5) g")
        .await
        .unwrap();
    services::eventually(20, "the first five shipments", || async {
        (shipments().len() == 5).then_some(())
    })
    .await;
    server.shutdown().await.unwrap();

    // Written while no runner listens: kept in the outbox.
    db.batch_execute("INSERT INTO shipments SELECT g, 'dhl' FROM generate_series(6, 40) g")
        .await
        .unwrap();
    let waiting: i64 = db
        .query_one("SELECT count(*) FROM nanoflow.outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(waiting, 35);

    let server = start(Runner::new().workflow(pg_shipments), &database, &journal).await;
    services::eventually(30, "all forty shipments", || async {
        (shipments().len() == 40).then_some(())
    })
    .await;
    assert!(
        shipments().values().all(|&n| n == 1),
        "a shipment ran twice: {:?}",
        shipments()
    );

    // The crash window between journaling an event and deleting its row: the row is read again,
    // and its key, already journaled, starts nothing.
    db.batch_execute(
        "INSERT INTO nanoflow.outbox (id, consumer, table_name, operation, new_row)
         VALUES (1, 'pg_shipments', 'public.shipments', 'insert', '{\"id\": 1, \"carrier\": \"ups\"}')",
    )
    .await
    .unwrap();
    services::eventually(10, "the replayed row to be consumed", || async {
        let n: i64 = db
            .query_one("SELECT count(*) FROM nanoflow.outbox", &[])
            .await
            .ok()?
            .get(0);
        (n == 0).then_some(())
    })
    .await;
    server.shutdown().await.unwrap();

    // A third start finds nothing left to do.
    let server = start(Runner::new().workflow(pg_shipments), &database, &journal).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(shipments().len(), 40);
    assert!(
        shipments().values().all(|&n| n == 1),
        "a shipment ran twice: {:?}",
        shipments()
    );
    assert_eq!(runs(&server, "pg_shipments").await.len(), 40);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_does_not_fit_is_a_failed_run_and_the_next_event_runs() {
    let Some(url) = services::postgres() else {
        return;
    };
    let database = services::fresh_database(&url).await;
    let db = services::connect_db(&database).await;
    db.batch_execute("CREATE TABLE notes (id bigint PRIMARY KEY, text text)")
        .await
        .unwrap();
    let server = start(Runner::new().workflow(pg_notes), &database, &temp_journal()).await;
    subscribed(&db, "pg_notes").await;
    db.batch_execute("INSERT INTO notes VALUES (1, NULL)")
        .await
        .unwrap();
    db.batch_execute("INSERT INTO notes VALUES (2, 'hello')")
        .await
        .unwrap();
    let all = services::eventually(20, "two finished runs", || async {
        let all = runs(&server, "pg_notes").await;
        (all.len() == 2 && all.iter().all(|r| r["status"] != "running")).then_some(all)
    })
    .await;
    let failed: Vec<_> = all.iter().filter(|r| r["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{all:?}");
    assert_eq!(failed[0]["error"]["code"], "invalid_input");
    let message = failed[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("does not fit the input of workflow `pg_notes`")
            && message.contains("new.text"),
        "{message}"
    );
    assert!(all
        .iter()
        .any(|r| r["status"] == "succeeded" && r["output"] == "hello"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bad_database_url_is_refused_at_start() {
    let error = Runner::new()
        .workflow(pg_notes)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: None,
            database_url: Some("postgres://[not a url".into()),
            ..ServeConfig::default()
        })
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("invalid PostgreSQL URL (`--database-url`, `NANOFLOW_DATABASE_URL`)"),
        "{error}"
    );
}

/// `/readyz` reports the database triggers: not ready while the database cannot be reached
/// (with the reason), ready once every listener is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_the_database_listeners() {
    let Some(url) = services::postgres() else {
        return;
    };
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = start(
        Runner::new().workflow(pg_notes),
        &format!("postgres://postgres@127.0.0.1:{closed}/postgres"),
        &temp_journal(),
    )
    .await;
    let reason = services::eventually(20, "a database check saying why", || async {
        let r = get(down.local_addr(), "/readyz").await;
        (r.status == 503 && r.json()["checks"]["database"]["ready"] == false)
            .then(|| r.json()["checks"]["database"]["reason"].clone())
    })
    .await;
    assert!(reason.as_str().unwrap().contains("pg_notes"), "{reason}");
    down.shutdown().await.unwrap();

    let database = services::fresh_database(&url).await;
    let db = services::connect_db(&database).await;
    db.batch_execute("CREATE TABLE notes (id bigint PRIMARY KEY, text text NOT NULL)")
        .await
        .unwrap();
    let up = start(Runner::new().workflow(pg_notes), &database, &temp_journal()).await;
    services::eventually(20, "ready with its listener", || async {
        let r = get(up.local_addr(), "/readyz").await;
        (r.status == 200 && r.json()["checks"]["database"]["ready"] == true).then_some(())
    })
    .await;
    up.shutdown().await.unwrap();
}
