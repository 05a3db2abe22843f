use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Review {
    Approved(u64),
    Rejected(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
}

#[node]
fn review(cents: u64) -> Review {
    Review::Approved(cents)
}
#[node]
fn ship(got: (u64, Approval)) -> String {
    got.1.by
}
#[node]
fn refund(reason: String) -> String {
    reason
}

workflow! {
    pub approve: review -> match {
        Approved(cents) => signal(approval: Approval) -> ship,
        Rejected(r) => sleep("1s") -> refund,
    };
}

fn main() {}
