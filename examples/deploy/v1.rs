//! The first build of a service that a deploy changes (`deploy_v2` is the next one): the
//! output type of `prepare` changes between them, `audit` does not. `tests/deploys.rs` kills
//! this build with runs in flight and starts the next on the same journal.
//!
//! ```text
//! cargo run --example deploy_v1 -- --journal /tmp/deploy.db
//! ```
#![allow(missing_docs)]

#[path = "shared.rs"]
mod shared;

use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};
use shared::{note, pause, stamp, Order};

/// The priced order, as this build writes it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Prepared {
    pub id: String,
    pub total: u64,
}

#[node]
async fn prepare(o: Order) -> Prepared {
    if o.hold {
        pause().await;
    }
    Prepared {
        id: o.id,
        total: u64::from(o.qty) * 250,
    }
}

#[node]
async fn settle(p: Prepared) -> Prepared {
    pause().await;
    p
}

#[node]
fn receipt(p: Prepared) -> String {
    format!("receipt {}: {}", p.id, p.total)
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
