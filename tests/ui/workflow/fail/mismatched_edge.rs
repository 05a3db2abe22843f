use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub qty: u32,
    pub unit_cents: u64,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Priced {
    pub id: String,
    pub total_cents: u64,
}

#[node]
async fn price(o: Order) -> Result<Priced, NodeError> {
    Ok(Priced { id: o.id, total_cents: o.qty as u64 * o.unit_cents })
}
#[node]
fn tax(p: Priced) -> u64 {
    p.total_cents / 10
}
#[node]
fn shipping(p: String) -> u64 {
    p.len() as u64
}
#[node]
fn total(parts: (u64, u64)) -> u64 {
    parts.0 + parts.1
}

workflow! {
    pub checkout: price -> (tax, shipping) -> total;
}

fn main() {}
