//! What both builds of the `deploy` example share: the order type, the unchanged `audit`
//! workflow, and a configurable pause that keeps runs in flight (`DEPLOY_SLOW_MS`).

use std::time::Duration;

use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Order {
    pub id: String,
    pub qty: u32,
    /// Holds the run in its first step (while `DEPLOY_SLOW_MS` is set).
    #[serde(default)]
    pub hold: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Noted {
    pub id: String,
}

/// Sleeps `DEPLOY_SLOW_MS` milliseconds (0 when unset): long enough, in the first build, for
/// a test to kill the runner with runs in flight.
pub(crate) async fn pause() {
    let ms = std::env::var("DEPLOY_SLOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[node]
pub(crate) async fn note(o: Order) -> Noted {
    Noted { id: o.id }
}

#[node]
pub(crate) async fn stamp(n: Noted) -> String {
    pause().await;
    format!("stamped {}", n.id)
}
