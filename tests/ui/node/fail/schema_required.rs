use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

// Serializable, but without `schemars::JsonSchema`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub qty: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Priced {
    pub cents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub text: String,
}

// `schema` asks for both types to have a JSON Schema: the error is at the input's type.
#[node(schema)]
fn price(order: Order) -> Priced {
    Priced { cents: u64::from(order.qty) * 100 }
}

// ... and here at the output's.
#[node(schema)]
fn receipt(p: Priced) -> Result<Receipt, NodeError> {
    Ok(Receipt { text: format!("{} cents", p.cents) })
}

// Without `schema`, the same types are fine: their workflow reports "no schema".
#[node]
fn lenient(order: Order) -> Receipt {
    Receipt { text: order.qty.to_string() }
}

workflow! {
    pub checkout: price -> receipt;
    pub loose: lenient;
}

fn main() {}
