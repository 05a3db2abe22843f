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
    #[limit(concurency = 2)]
    pub limited: charge;
}

fn main() {}
