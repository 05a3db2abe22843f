//! Flow control and durable waits: an approval that waits for a signal (or three days), a
//! sleep that survives restarts, concurrency and rate limits, debounce, a whole-run timeout,
//! and cancellation with compensation.
//!
//! ```text
//! cargo run --example flow -- --addr 127.0.0.1:8082
//! curl -s localhost:8082/approvals -H 'content-type: application/json' -d '{"id":"a-1","cents":1200}'
//! # -> 202 {"run_id":"…","status":"waiting"}
//! curl -s localhost:8082/runs/<run_id>/signals/approval -H 'content-type: application/json' \
//!      -d '{"approved":true,"by":"ana"}'
//! ```
//! Each node appends `incarnation step id start_ms end_ms` to a ledger (`NANOFLOW_LEDGER`):
//! `tests/flow.rs` reads it to check what ran, when, and how often.
#![allow(missing_docs)]

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Appends a line to the ledger (`NANOFLOW_LEDGER`, default `flow-ledger.log`).
fn ledger(step: &str, id: &str, started: u128) -> Result<(), NodeError> {
    let path = std::env::var("NANOFLOW_LEDGER").unwrap_or_else(|_| "flow-ledger.log".into());
    let incarnation =
        std::env::var("NANOFLOW_INCARNATION").unwrap_or_else(|_| std::process::id().to_string());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write call per line: O_APPEND keeps concurrent lines whole.
    file.write_all(format!("{incarnation} {step} {id} {started} {}\n", now_ms()).as_bytes())?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize, nanoflow::JsonSchema)]
pub struct Request {
    pub id: String,
    #[serde(default)]
    pub cents: u64,
    #[serde(default)]
    pub customer: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, nanoflow::JsonSchema)]
pub struct Approval {
    pub approved: bool,
    pub by: String,
}

#[node]
fn hold(r: Request) -> Result<Request, NodeError> {
    ledger("hold", &r.id, now_ms())?;
    Ok(r)
}

#[node]
fn decide(parts: (Request, Option<Approval>)) -> Result<String, NodeError> {
    let (r, approval) = parts;
    ledger("decide", &r.id, now_ms())?;
    Ok(match approval {
        Some(a) if a.approved => format!("{} approved by {}", r.id, a.by),
        Some(a) => format!("{} rejected by {}", r.id, a.by),
        None => format!("{} expired", r.id),
    })
}

#[node]
fn stamp(r: Request) -> Result<String, NodeError> {
    ledger("stamp", &r.id, now_ms())?;
    Ok(format!("{} stamped", r.id))
}

/// Takes 200 ms: what the concurrency limit is measured on.
#[node]
async fn slow(r: Request) -> Result<String, NodeError> {
    let started = now_ms();
    tokio::time::sleep(Duration::from_millis(200)).await;
    ledger("slow", &r.id, started)?;
    Ok(r.id)
}

#[node]
fn tick(r: Request) -> Result<String, NodeError> {
    ledger("tick", &r.id, now_ms())?;
    Ok(r.id)
}

#[node]
fn notify(r: Request) -> Result<String, NodeError> {
    ledger("notify", &r.id, now_ms())?;
    Ok(format!("{} notified {}", r.customer, r.id))
}

#[node]
fn charge(r: Request) -> Result<Request, NodeError> {
    ledger("charge", &r.id, now_ms())?;
    Ok(r)
}

#[node]
fn refund(r: Request) -> Result<(), NodeError> {
    ledger("refund", &r.id, now_ms())
}

#[node]
fn ship(parts: (Request, Approval)) -> Result<String, NodeError> {
    ledger("ship", &parts.0.id, now_ms())?;
    Ok(format!("shipped {}", parts.0.id))
}

#[node]
async fn linger(r: Request) -> Result<Request, NodeError> {
    let started = now_ms();
    tokio::time::sleep(Duration::from_secs(5)).await;
    ledger("linger", &r.id, started)?;
    Ok(r)
}

workflow! {
    /// Holds a request until someone approves or rejects it; expires after three days.
    #[trigger(http = "POST /approvals")]
    pub approve: hold -> signal(approval: Approval, timeout = "3d") -> decide;

    /// Waits for an approval at most 1 s (tests the timeout).
    #[trigger(http = "POST /quick-approvals")]
    pub quick_approve: hold -> signal(approval: Approval, timeout = "1s") -> decide;

    /// Stamps a request two seconds after it arrived, restarts or not.
    #[trigger(http = "POST /later")]
    pub later: hold -> sleep("2s") -> stamp;

    /// At most two at once.
    #[trigger(http = "POST /slow")]
    #[limit(concurrency = 2)]
    pub limited: slow;

    /// Started at most 20 per second.
    #[trigger(http = "POST /ticks")]
    #[limit(rate = "20/s")]
    pub rated: tick;

    /// One notification per customer for a burst: the last request of each 300 ms quiet spell.
    #[trigger(http = "POST /notify")]
    #[limit(debounce = "300ms", key = customer)]
    pub debounced: notify;

    /// Charged, then waits for a go to ship; cancelled or failed, the charge is refunded.
    #[trigger(http = "POST /orders")]
    #[compensate(charge => refund)]
    pub order: charge -> signal(go: Approval) -> ship;

    /// Must finish within 500 ms; it cannot (a 5 s node), so it fails with `workflow_timeout`
    /// and the charge is refunded.
    #[trigger(http = "POST /hurried")]
    #[timeout("500ms")]
    #[compensate(charge => refund)]
    pub hurried: charge -> linger -> stamp;
}

#[tokio::main]
async fn main() -> Result<(), nanoflow::Error> {
    Runner::new()
        .workflow(approve)
        .workflow(quick_approve)
        .workflow(later)
        .workflow(limited)
        .workflow(rated)
        .workflow(debounced)
        .workflow(order)
        .workflow(hurried)
        .serve()
        .await
}
