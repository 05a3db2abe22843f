use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Priced {
    pub total_cents: u64,
}

#[node]
fn price(cents: u64) -> Priced {
    Priced { total_cents: cents }
}
#[node]
fn tax(p: Priced) -> u64 {
    p.total_cents / 10
}
#[node]
fn shipping(p: Priced) -> u64 {
    p.total_cents / 100
}
#[node]
fn total(parts: (u64, u64)) -> u64 {
    parts.0 + parts.1
}

workflow! {
    pub checkout: price -> (tax, shipping) -> total;
}

fn main() {}
