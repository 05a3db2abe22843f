use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charge {
    pub customer: String,
    pub name: String,
    pub cents: u64,
}

#[node]
fn charge(c: Charge) -> u64 {
    c.cents
}

workflow! {
    #[timeout("x")]
    pub limited: charge;

    #[timeout("0s")]
    pub zero: charge;
}

fn main() {}
