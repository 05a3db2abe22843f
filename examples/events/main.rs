//! An order pipeline fed by events: orders from a NATS queue, shipping chained after each
//! placed order, and refunds from rows inserted into a PostgreSQL table. Each step appends to a
//! ledger file, so `tests/triggers_crash.rs` can check that SIGKILLed runners lose nothing.
//!
//! ```text
//! source .ci/services          # or point NANOFLOW_NATS_URL and NANOFLOW_DATABASE_URL elsewhere
//! psql "$NANOFLOW_DATABASE_URL" -c 'CREATE TABLE returns (id bigint PRIMARY KEY, order_id text NOT NULL)'
//! cargo run --example events -- --addr 127.0.0.1:8082
//! curl -s localhost:8082/queues/shop.orders -H 'content-type: application/json' -d '{"id":"o-1","qty":2}'
//! psql "$NANOFLOW_DATABASE_URL" -c "INSERT INTO returns VALUES (1, 'o-1')"
//! ```
#![allow(missing_docs)]

use std::io::Write as _;
use std::time::Duration;

use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub qty: u32,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub order_id: String,
    pub cents: u64,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Return {
    pub id: i64,
    pub order_id: String,
}

/// Appends `incarnation key step` to the ledger (`NANOFLOW_LEDGER`, default `ledger.log`).
fn ledger(key: &str, step: &str) -> Result<(), NodeError> {
    let path = std::env::var("NANOFLOW_LEDGER").unwrap_or_else(|_| "ledger.log".into());
    let incarnation =
        std::env::var("NANOFLOW_INCARNATION").unwrap_or_else(|_| std::process::id().to_string());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(format!("{incarnation} {key} {step}\n").as_bytes())?;
    Ok(())
}

#[node]
async fn reserve(o: Order) -> Result<Order, NodeError> {
    if o.qty == 0 {
        return Err(NodeError::permanent("qty must be at least 1"));
    }
    ledger(&o.id, "reserve")?;
    // For `tests/triggers_crash.rs`: the order `NANOFLOW_HOLD` names holds its first node, so
    // that the runner can be killed before the run's first record.
    if std::env::var("NANOFLOW_HOLD").is_ok_and(|id| id == o.id) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    Ok(o)
}

#[node]
async fn charge(o: Order) -> Result<Receipt, NodeError> {
    ledger(&o.id, "charge")?;
    tokio::time::sleep(Duration::from_millis(2)).await;
    Ok(Receipt {
        order_id: o.id,
        cents: u64::from(o.qty) * 1250,
    })
}

#[node]
async fn confirm(r: Receipt) -> Result<Receipt, NodeError> {
    ledger(&r.order_id, "confirm")?;
    Ok(r)
}

#[node]
async fn ship(r: Receipt) -> Result<String, NodeError> {
    ledger(&r.order_id, "ship")?;
    tokio::time::sleep(Duration::from_millis(2)).await;
    Ok(format!("shipped {}", r.order_id))
}

#[node]
async fn refund(e: DbEvent<Return>) -> Result<String, NodeError> {
    let ret = e
        .new
        .ok_or_else(|| NodeError::permanent("an insert carries the new row"))?;
    ledger(&format!("return-{}", ret.id), "refund")?;
    Ok(format!("refunded {}", ret.order_id))
}

workflow! {
    /// Orders from the `shop.orders` queue: reserve, charge, confirm.
    #[trigger(queue = "shop.orders")]
    pub place_order: reserve -> charge -> confirm;

    /// Ships each confirmed order.
    #[trigger(after = place_order)]
    pub ship_order: ship;

    /// Refunds each row inserted into `public.returns`.
    #[trigger(postgres = "public.returns", on = "insert")]
    pub handle_return: refund;
}

#[tokio::main]
async fn main() -> Result<(), nanoflow::Error> {
    Runner::new()
        .workflow(place_order)
        .workflow(ship_order)
        .workflow(handle_return)
        .serve()
        .await
}
