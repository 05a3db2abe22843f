// `#[node(schema)]` with types that have a JSON Schema, in a crate that denies warnings: the
// checks and the workflow's `schemas()` add nothing a user would see.
#![deny(warnings, unused_qualifications)]

use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Order {
    pub qty: u32,
    pub note: Option<String>,
}

#[node(schema, retries = 1)]
fn price(order: Order) -> Result<Vec<u64>, NodeError> {
    Ok(vec![u64::from(order.qty)])
}

#[node(schema)]
fn sum(parts: Vec<u64>) -> u64 {
    parts.iter().sum()
}

workflow! {
    pub checkout: price -> sum;
}

fn main() {
    let (input, output) = Workflow::schemas(&checkout);
    assert_eq!(input.unwrap()["title"], "Order");
    assert_eq!(output.unwrap()["type"], "integer");
}
