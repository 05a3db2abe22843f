//! `signal(..)`, `sleep(..)`, `#[limit(..)]` and `#[timeout(..)]` in a crate with strict lints:
//! the expansions add no warning, and the signal methods are documented.
#![deny(
    warnings,
    unused_qualifications,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    unused_results,
    trivial_casts,
    trivial_numeric_casts,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

/// A charge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charge {
    /// Who pays.
    pub customer: Customer,
    /// How urgent.
    pub tier: u8,
    /// How much.
    pub cents: u64,
}

/// A customer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Customer {
    /// Its id.
    pub id: String,
}

/// An approval.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    /// Who approved.
    pub by: String,
}

/// Holds.
#[node]
pub fn hold(c: Charge) -> u64 {
    c.cents
}
/// Decides.
#[node]
pub fn decide(got: (u64, Option<Approval>)) -> bool {
    got.1.is_some()
}
/// Ships.
#[node]
pub fn ship(got: (bool, u32)) -> u32 {
    got.1
}

workflow! {
    /// Waits for an approval, then for a quantity, with a nap between.
    #[trigger(http = "POST /approve")]
    #[limit(concurrency = 2, key = "customer.id", priority = tier)]
    #[limit(rate = "10/s")]
    #[limit(debounce = "1s", key = "customer.id")]
    #[timeout("1h")]
    pub approve: hold
        -> signal(approval: Approval, timeout = "3d")
        -> decide
        -> sleep("10m")
        -> signal(quantity: u32)
        -> ship;
}

/// Sends both signals.
pub async fn send(run_id: nanoflow::RunId) -> Result<(), nanoflow::SignalError> {
    approve
        .signal_approval(run_id, Approval { by: "ann".into() })
        .await?;
    approve.signal_quantity(run_id, 3).await
}

fn main() {
    let _ = send;
}
