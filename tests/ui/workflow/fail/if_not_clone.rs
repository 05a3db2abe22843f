use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Claim {
    pub cents: u64,
}

#[node]
fn is_large(c: Claim) -> bool {
    c.cents > 1000
}
#[node]
fn manual(c: Claim) -> u64 {
    c.cents
}
#[node]
fn automatic(c: Claim) -> u64 {
    c.cents
}

workflow! {
    pub routing: if is_large { manual } else { automatic };
}

fn main() {}
