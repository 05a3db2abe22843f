//! Chaining with `#[trigger(after = ...)]`: a success starts the chained workflows (journaled,
//! keyed by the upstream run), a failure starts none, chains of chains, and the start-up errors
//! for a cycle across `workflow!` blocks and for an upstream the runner does not have.
//! `tests/triggers_crash.rs` chains across SIGKILLed runners.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nanoflow::prelude::*;
use nanoflow::{ServeConfig, Server};
use serde::{Deserialize, Serialize};
use support::{get, post_json};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub qty: u32,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub order_id: String,
    pub cents: u64,
}

#[node]
fn pay(o: Order) -> Result<Receipt, NodeError> {
    if o.qty == 0 {
        return Err(NodeError::permanent("qty must be at least 1"));
    }
    Ok(Receipt {
        order_id: o.id,
        cents: u64::from(o.qty) * 100,
    })
}
static EMAILS: Mutex<Vec<Receipt>> = Mutex::new(Vec::new());
#[node]
fn email(r: Receipt) -> String {
    EMAILS.lock().unwrap().push(r.clone());
    format!("mailed {}", r.order_id)
}
#[node]
fn book(r: Receipt) -> u64 {
    r.cents
}
#[node]
fn audit(line: String) -> String {
    format!("audited: {line}")
}
#[node]
fn echo(s: String) -> String {
    s
}

workflow! {
    #[trigger(http = "POST /checkout")]
    checkout: pay;

    /// Started by each successful checkout, with its receipt.
    #[trigger(after = checkout)]
    notify: email;

    #[trigger(after = checkout)]
    bookkeeping: book;

    /// A chain of chains.
    #[trigger(after = notify)]
    audit_trail: audit;
}

// A cycle that no single `workflow!` block sees: found when the runner starts.
workflow! {
    #[trigger(after = pong)]
    ping: echo;
}
workflow! {
    #[trigger(after = ping)]
    pong: echo as echo_back;
}

async fn start(runner: Runner, journal: Option<PathBuf>) -> Server {
    runner
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal,
            ..ServeConfig::default()
        })
        .await
        .expect("server starts")
}

fn temp_journal() -> PathBuf {
    std::env::temp_dir()
        .join(format!("nanoflow-chain-{}", nanoflow::RunId::new()))
        .join("journal.db")
}

async fn runs_of(server: &Server, workflow: &str) -> Vec<serde_json::Value> {
    get(server.local_addr(), &format!("/runs?workflow={workflow}"))
        .await
        .json()["runs"]
        .as_array()
        .unwrap()
        .clone()
}

async fn finished(server: &Server, workflow: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let runs = runs_of(server, workflow).await;
        if runs.len() >= n && runs.iter().all(|r| r["status"] != "running") {
            return runs;
        }
        assert!(Instant::now() < deadline, "{workflow}: {runs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn full() -> Runner {
    Runner::new()
        .workflow(checkout)
        .workflow(notify)
        .workflow(bookkeeping)
        .workflow(audit_trail)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_starts_the_chained_workflows_with_its_output() {
    let server = start(full(), Some(temp_journal())).await;
    let r = post_json(server.local_addr(), "/checkout", r#"{"id":"c-1","qty":3}"#).await;
    assert_eq!(r.status, 200);
    let upstream = runs_of(&server, "checkout").await[0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let notified = finished(&server, "notify", 1).await;
    assert_eq!(notified.len(), 1);
    assert_eq!(notified[0]["status"], "succeeded");
    assert_eq!(notified[0]["output"], "mailed c-1");
    assert_eq!(
        notified[0]["input"],
        serde_json::json!({"order_id": "c-1", "cents": 300})
    );
    assert_eq!(notified[0]["idempotency_key"], format!("after:{upstream}"));
    let booked = finished(&server, "bookkeeping", 1).await;
    assert_eq!(booked[0]["output"], 300);
    let audited = finished(&server, "audit_trail", 1).await;
    assert_eq!(audited[0]["output"], "audited: mailed c-1");
    assert!(EMAILS.lock().unwrap().contains(&Receipt {
        order_id: "c-1".into(),
        cents: 300
    }));

    // A failed checkout starts nothing.
    let r = post_json(server.local_addr(), "/checkout", r#"{"id":"c-2","qty":0}"#).await;
    assert_eq!(r.status, 500);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(runs_of(&server, "notify").await.len(), 1);
    assert_eq!(runs_of(&server, "bookkeeping").await.len(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn chaining_works_without_the_journal_too() {
    let server = start(full(), None).await;
    let r = post_json(server.local_addr(), "/checkout", r#"{"id":"m-1","qty":1}"#).await;
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !EMAILS.lock().unwrap().iter().any(|r| r.order_id == "m-1") {
        assert!(Instant::now() < deadline, "the chained run did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_cycle_across_blocks_is_refused_at_start() {
    let error = Runner::new()
        .workflow(ping)
        .workflow(pong)
        .start(ServeConfig::default())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "`after` triggers form a cycle: ping -> pong -> ping; each run would start the next, forever; remove one of them"
    );
}

#[tokio::test]
async fn an_upstream_missing_from_the_runner_is_refused_at_start() {
    let error = Runner::new()
        .workflow(notify)
        .start(ServeConfig::default())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "workflow `notify` is triggered after workflow `checkout`, which is not registered with this runner; \
         add `.workflow(checkout)` to the runner"
    );
}
