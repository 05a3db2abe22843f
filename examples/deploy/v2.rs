//! The second build of the `deploy` example: `prepare` now returns a `Prepared` with other
//! fields (cents and a currency). Runs that `deploy_v1` recorded past `prepare` cannot resume
//! here: they are parked as `blocked` with `graph_changed` naming `prepare`. Runs recorded
//! before it, and every run of `audit`, finish.
#![allow(missing_docs)]

#[path = "shared.rs"]
mod shared;

use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};
use shared::{note, stamp, Order};

/// The priced order, as this build writes it: same name, another shape.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Prepared {
    pub id: String,
    pub total_cents: u64,
    pub currency: String,
}

#[node]
async fn prepare(o: Order) -> Prepared {
    Prepared {
        id: o.id,
        total_cents: u64::from(o.qty) * 250,
        currency: "EUR".into(),
    }
}

#[node]
async fn settle(p: Prepared) -> Prepared {
    p
}

#[node]
fn receipt(p: Prepared) -> String {
    format!("receipt {}: {} {}", p.id, p.total_cents, p.currency)
}

workflow! {
    /// Prices, settles, writes the receipt.
    #[trigger(http = "POST /checkout")]
    pub checkout: prepare -> settle -> receipt;

    /// Unchanged between the two builds.
    #[trigger(http = "POST /audit")]
    pub audit: note -> stamp;
}

#[tokio::main]
async fn main() -> Result<(), nanoflow::Error> {
    Runner::new()
        .workflow(checkout)
        .workflow(audit)
        .serve()
        .await
}
