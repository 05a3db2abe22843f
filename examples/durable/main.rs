//! A durable pipeline: each step appends to a ledger file, and the journal guarantees that a
//! crash (even `kill -9`) loses no accepted run and never runs a completed step again.
//!
//! ```text
//! cargo run --example durable -- --addr 127.0.0.1:8081
//! curl -s localhost:8081/shipments -H 'content-type: application/json' \
//!      -H 'prefer: respond-async' -H 'idempotency-key: s-1' -d '{"id":"s-1"}'
//! ```
//! `tests/crash.rs` kills it at random points and checks the ledger.
#![allow(missing_docs)]

use std::io::Write as _;
use std::time::Duration;

use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shipment {
    pub id: String,
}

/// Appends `incarnation id step` to the ledger (`NANOFLOW_LEDGER`, default `ledger.log`).
fn ledger(id: &str, step: &str) -> Result<(), NodeError> {
    let path = std::env::var("NANOFLOW_LEDGER").unwrap_or_else(|_| "ledger.log".into());
    let incarnation =
        std::env::var("NANOFLOW_INCARNATION").unwrap_or_else(|_| std::process::id().to_string());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write call per line: O_APPEND keeps concurrent lines whole.
    file.write_all(format!("{incarnation} {id} {step}\n").as_bytes())?;
    Ok(())
}

#[node]
async fn reserve_stock(s: Shipment) -> Result<Shipment, NodeError> {
    ledger(&s.id, "reserve_stock")?;
    tokio::time::sleep(Duration::from_millis(3)).await;
    Ok(s)
}

#[node]
async fn charge_card(s: Shipment) -> Result<Shipment, NodeError> {
    ledger(&s.id, "charge_card")?;
    tokio::time::sleep(Duration::from_millis(3)).await;
    Ok(s)
}

#[node]
async fn ship(s: Shipment) -> Result<String, NodeError> {
    ledger(&s.id, "ship")?;
    tokio::time::sleep(Duration::from_millis(2)).await;
    Ok(format!("shipped {}", s.id))
}

workflow! {
    /// Reserves stock, charges the card, ships: each step exactly once per shipment.
    #[trigger(http = "POST /shipments")]
    pub shipment: reserve_stock -> charge_card -> ship;
}

#[tokio::main]
async fn main() -> Result<(), nanoflow::Error> {
    Runner::new().workflow(shipment).serve().await
}
