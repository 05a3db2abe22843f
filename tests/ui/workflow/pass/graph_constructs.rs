//! `match`, `if`, `map(..)` and sub-workflows in a crate with strict lints: the expansions add
//! no warning, and nodes from another module work in every position.
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

/// A review's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Review {
    /// Approved, for an amount.
    Approved(u64),
    /// Rejected, with a reason and a code.
    Rejected(String, u16),
    /// Sent up.
    Escalated {
        /// To whom.
        level: u8,
        /// Why.
        note: String,
    },
    /// Not decided.
    Pending,
}

mod steps {
    use super::Review;
    use nanoflow::prelude::*;

    /// Reviews.
    #[node]
    pub(crate) fn review(cents: u64) -> Review {
        match cents {
            0 => Review::Pending,
            1..=99 => Review::Approved(cents),
            100..=999 => Review::Escalated { level: 1, note: "check".into() },
            _ => Review::Rejected("too much".into(), 402),
        }
    }
    /// Pays.
    #[node]
    pub(crate) fn pay(cents: u64) -> String {
        format!("paid {cents}")
    }
    /// Refuses.
    #[node]
    pub(crate) fn refuse(why: (String, u16)) -> String {
        format!("{} {}", why.1, why.0)
    }
    /// Escalates.
    #[node]
    pub(crate) fn escalate(level: u8) -> String {
        format!("level {level}")
    }
    /// Waits.
    #[node]
    pub(crate) fn wait(_: ()) -> String {
        "wait".into()
    }
    /// Whether it is even.
    #[node]
    pub(crate) fn is_even(n: u64) -> bool {
        n % 2 == 0
    }
    /// Halves.
    #[node]
    pub(crate) fn halve(n: u64) -> u64 {
        n / 2
    }
    /// Counts up.
    #[node]
    pub(crate) fn upto(n: u64) -> Vec<u64> {
        (0..n).collect()
    }
    /// Adds up.
    #[node]
    pub(crate) fn sum(xs: Vec<u64>) -> u64 {
        xs.iter().sum()
    }
    /// Fails on odd numbers.
    #[node]
    pub(crate) fn even_only(n: u64) -> Result<u64, NodeError> {
        if n % 2 == 1 {
            return Err(NodeError::permanent("odd"));
        }
        Ok(n)
    }
    /// Counts the successes.
    #[node]
    pub(crate) fn successes(results: Vec<Result<u64, NodeError>>) -> usize {
        results.iter().filter(|r| r.is_ok()).count()
    }
}

workflow! {
    /// Every arm shape.
    pub reviewing: steps::review -> match {
        Approved(cents) => steps::pay,
        Review::Rejected(reason, code) => steps::refuse,
        Escalated { level, note: _ } => steps::escalate,
        Pending => steps::wait,
    };

    /// An `if` with an `else if`, rejoining at `sum`'s input.
    pub(crate) halving: steps::upto -> map(
        if steps::is_even { steps::halve } else if steps::is_even as never { steps::halve as halve_2 } else { steps::halve as halve_3 },
        concurrency = 3,
    ) -> steps::sum;

    /// Errors collected.
    collecting: steps::upto -> map(steps::even_only, collect_errors) -> steps::successes;

    /// A sub-workflow.
    pub nested: steps::upto as count_up -> map(halving_item) -> steps::sum as total;

    /// Used as a node above.
    halving_item: steps::halve as halve_item -> steps::upto as upto_item -> steps::sum as sum_item;
}

#[tokio::main]
async fn main() {
    assert_eq!(reviewing.run(5).await.unwrap(), "paid 5");
    assert_eq!(reviewing.run(5000).await.unwrap(), "402 too much");
    assert_eq!(halving.run(4).await.unwrap(), 0 + 0 + 1 + 1);
    assert_eq!(collecting.run(5).await.unwrap(), 3);
    assert!(nested.run(3).await.is_ok());
    let _runner = Runner::new().workflow(reviewing).workflow(halving).workflow(nested);
}
