use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
}

#[node]
fn hold(cents: u64) -> u64 {
    cents
}
// With a timeout the signal passes on `(u64, Option<Approval>)`.
#[node]
fn decide(got: (u64, Approval)) -> String {
    got.1.by
}

workflow! {
    pub approve: hold -> signal(approval: Approval, timeout = "1s") -> decide;
}

fn main() {}
