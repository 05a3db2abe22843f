use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Review {
    Approved(u64),
    Rejected(String),
}

#[node]
fn review(cents: u64) -> Review {
    if cents < 1000 { Review::Approved(cents) } else { Review::Rejected("too much".into()) }
}
#[node]
fn ship(cents: u64) -> String {
    format!("shipped {cents}")
}
#[node]
fn refund(cents: u64) -> String {
    format!("refunded {cents}")
}

workflow! {
    pub claims: review -> match {
        Approved(cents) => ship,
        Rejected(reason) => refund,
    };
}

fn main() {}
