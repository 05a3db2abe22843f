use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Review {
    Approved(u64),
    Rejected(String),
    Escalated { level: u8 },
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
fn refund(reason: String) -> String {
    format!("refunded: {reason}")
}

workflow! {
    pub claims: review -> match {
        Approved(cents) => ship,
        Rejected(reason) => refund,
    };
}

fn main() {}
