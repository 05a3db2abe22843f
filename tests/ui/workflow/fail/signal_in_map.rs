use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
}

#[node]
fn split(n: u64) -> Vec<u64> {
    (0..n).collect()
}
#[node]
fn score(n: u64) -> u64 {
    n
}
#[node]
fn check(got: (u64, Approval)) -> u64 {
    got.0
}

workflow! {
    pub each: split -> map(score -> signal(approval: Approval) -> check);
}

fn main() {}
