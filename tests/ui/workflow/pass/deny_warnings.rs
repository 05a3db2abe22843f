//! A crate with strict lints: the expansions add no warning.
#![deny(
    warnings,
    unused_qualifications,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    unused_results,
    trivial_casts,
    trivial_numeric_casts,
    unused_extern_crates,
    unused_import_braces,
    non_ascii_idents,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

use nanoflow::prelude::*;
use serde::{Deserialize, Serialize};

/// An order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// How many.
    pub qty: u32,
}

/// Nodes in a private module, used by a public workflow.
mod steps {
    use super::Order;
    use nanoflow::prelude::*;

    /// Counts the items.
    #[node(retries = 1, timeout = "1s")]
    pub(crate) async fn count(order: Order) -> Result<u64, NodeError> {
        Ok(u64::from(order.qty))
    }

    /// Doubles.
    #[node]
    pub(crate) fn double(n: u64) -> u64 {
        n * 2
    }

    /// Triples.
    #[node]
    pub(crate) fn triple(n: u64) -> u64 {
        n * 3
    }

    /// Adds.
    #[node]
    pub(crate) fn add(parts: (u64, u64)) -> u64 {
        parts.0 + parts.1
    }
}

workflow! {
    /// Counts, then doubles and triples in parallel, then adds.
    #[trigger(http = "POST /count")]
    pub counting: steps::count -> (steps::double, steps::triple) -> steps::add;

    /// A private workflow, used below.
    twice: steps::double -> steps::double as double_again;

    /// A crate-visible workflow that nothing uses.
    pub(crate) unused: steps::triple;
}

#[tokio::main]
async fn main() {
    let out = counting.run(Order { qty: 2 }).await.unwrap();
    assert_eq!(out, 10);
    assert_eq!(twice.run(1).await.unwrap(), 4);
    let _runner = Runner::new().workflow(counting).workflow(twice);
}
