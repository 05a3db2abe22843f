//! Several runners on one PostgreSQL journal: shipments that take a while, a per-second cron
//! tick, and a ledger of every step executed, per runner (`NANOFLOW_LEDGER`). `tests/scale_out.rs`
//! runs three of them, kills one, and reads the ledger; `deploy/` runs it as replicas.
//!
//! ```text
//! cargo run --example scale -- --addr 127.0.0.1:8081 --journal postgres://app@127.0.0.1/nanoflow
//! cargo run --example scale -- --addr 127.0.0.1:8082 --journal postgres://app@127.0.0.1/nanoflow
//! curl -s localhost:8081/shipments -H 'content-type: application/json' \
//!      -H 'prefer: respond-async' -d '{"id":"s-1"}'
//! curl -s localhost:8082/runs          # every run, whichever runner accepted it
//! ```
#![allow(missing_docs)]

use std::io::Write as _;
use std::time::Duration;

use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shipment {
    pub id: String,
}

/// Appends `runner what detail ms` to the ledger (`NANOFLOW_LEDGER`; none when unset).
fn ledger(what: &str, detail: &str) -> Result<(), NodeError> {
    let Ok(path) = std::env::var("NANOFLOW_LEDGER") else {
        return Ok(());
    };
    let runner =
        std::env::var("NANOFLOW_RUNNER_ID").unwrap_or_else(|_| std::process::id().to_string());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write call per line: O_APPEND keeps concurrent lines (of all runners) whole.
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    file.write_all(format!("{runner} {what} {detail} {ms}\n").as_bytes())?;
    Ok(())
}

/// How long each shipment step takes (`NANOFLOW_STEP_MS`, default 30 ms).
async fn work() {
    let ms = std::env::var("NANOFLOW_STEP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[node]
async fn reserve_stock(s: Shipment) -> Result<Shipment, NodeError> {
    ledger(&s.id, "reserve_stock")?;
    work().await;
    Ok(s)
}

#[node]
async fn charge_card(s: Shipment) -> Result<Shipment, NodeError> {
    ledger(&s.id, "charge_card")?;
    work().await;
    Ok(s)
}

#[node]
async fn ship(s: Shipment) -> Result<String, NodeError> {
    ledger(&s.id, "ship")?;
    work().await;
    Ok(format!("shipped {}", s.id))
}

#[node]
async fn record_tick(tick: Tick) -> Result<i64, NodeError> {
    ledger("tick", &tick.scheduled_ms.to_string())?;
    Ok(tick.scheduled_ms)
}

workflow! {
    /// Reserves stock, charges the card, ships: each step once per shipment, whichever runner
    /// runs it.
    #[trigger(http = "POST /shipments")]
    pub shipment: reserve_stock -> charge_card -> ship;
}

workflow! {
    /// Every second, once across all the runners.
    #[trigger(cron = "* * * * * *")]
    pub every_second: record_tick;
}

#[tokio::main]
async fn main() -> Result<(), nanoflow::Error> {
    Runner::new()
        .workflow(shipment)
        .workflow(every_second)
        .serve()
        .await
}
