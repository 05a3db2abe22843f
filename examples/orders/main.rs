//! An order service: `POST /orders` validates an order, prices it and reserves stock in
//! parallel, then confirms; a cron workflow reports sales every minute.
//!
//! ```text
//! cargo run --example orders
//! curl -s localhost:8080/orders -H 'content-type: application/json' \
//!      -d '{"id":"o-1","customer":"ada","items":[{"sku":"apple","qty":3}]}'
//! ```
#![allow(missing_docs)] // an example binary: its types are documented where it helps

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use nanoflow::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a client sends.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Order {
    pub id: String,
    pub customer: String,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Item {
    pub sku: String,
    pub qty: u32,
}

/// An order whose items all exist.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Valid {
    pub order: Order,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quote {
    pub subtotal_cents: u64,
    pub tax_cents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservation {
    pub reservation_id: String,
}

/// What the client gets back.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Confirmation {
    pub order_id: String,
    pub total_cents: u64,
    pub reservation_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    pub confirmed_orders: u64,
    pub revenue_cents: u64,
}

fn unit_price(sku: &str) -> Option<u64> {
    match sku {
        "apple" => Some(120),
        "pear" => Some(150),
        "melon" => Some(400),
        _ => None,
    }
}

static STOCK: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
static CONFIRMED: AtomicU64 = AtomicU64::new(0);
static REVENUE: AtomicU64 = AtomicU64::new(0);

#[node]
fn validate(order: Order) -> Result<Valid, NodeError> {
    if order.items.is_empty() {
        return Err(NodeError::permanent("an order needs at least one item").with_status(422));
    }
    for item in &order.items {
        if item.qty == 0 {
            return Err(NodeError::permanent(format!(
                "`{}`: quantity must be at least 1",
                item.sku
            ))
            .with_status(422));
        }
        if unit_price(&item.sku).is_none() {
            return Err(
                NodeError::permanent(format!("unknown product `{}`", item.sku)).with_status(422),
            );
        }
    }
    Ok(Valid { order })
}

#[node]
fn price(v: Valid) -> Quote {
    let subtotal_cents: u64 = v
        .order
        .items
        .iter()
        .map(|i| u64::from(i.qty) * unit_price(&i.sku).unwrap_or(0))
        .sum();
    Quote {
        subtotal_cents,
        tax_cents: subtotal_cents / 5,
    }
}

#[node(retries = 2, backoff = "20ms", timeout = "1s")]
async fn reserve(v: Valid) -> Result<Reservation, NodeError> {
    let mut guard = STOCK
        .lock()
        .map_err(|_| NodeError::retryable("stock is unavailable"))?;
    let stock = guard.get_or_insert_with(|| {
        [("apple", 1_000_000), ("pear", 1_000_000), ("melon", 10)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    });
    for item in &v.order.items {
        if stock.get(&item.sku).copied().unwrap_or(0) < item.qty {
            return Err(
                NodeError::permanent(format!("not enough `{}` in stock", item.sku))
                    .with_status(409),
            );
        }
    }
    for item in &v.order.items {
        if let Some(left) = stock.get_mut(&item.sku) {
            *left -= item.qty;
        }
    }
    Ok(Reservation {
        reservation_id: format!("r-{}", v.order.id),
    })
}

#[node]
fn confirm(parts: (Quote, Reservation)) -> Confirmation {
    let (quote, reservation) = parts;
    let total_cents = quote.subtotal_cents + quote.tax_cents;
    CONFIRMED.fetch_add(1, Ordering::Relaxed);
    REVENUE.fetch_add(total_cents, Ordering::Relaxed);
    Confirmation {
        order_id: reservation
            .reservation_id
            .trim_start_matches("r-")
            .to_owned(),
        total_cents,
        reservation_id: reservation.reservation_id,
    }
}

#[node]
fn sales_report(_tick: Tick) -> Report {
    let sales = Report {
        confirmed_orders: CONFIRMED.load(Ordering::Relaxed),
        revenue_cents: REVENUE.load(Ordering::Relaxed),
    };
    eprintln!(
        "sales so far: {} orders, {} cents",
        sales.confirmed_orders, sales.revenue_cents
    );
    sales
}

workflow! {
    /// Validates an order, prices it and reserves stock in parallel, then confirms it.
    #[trigger(http = "POST /orders")]
    pub place_order: validate -> (price, reserve) -> confirm;

    /// Logs the sales so far, at the start of every minute.
    #[trigger(cron = "0 * * * * *")]
    pub report: sales_report;
}

#[tokio::main]
async fn main() -> Result<(), nanoflow::Error> {
    Runner::new()
        .workflow(place_order)
        .workflow(report)
        .serve()
        .await
}
