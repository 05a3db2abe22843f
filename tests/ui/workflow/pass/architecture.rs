// The architecture's section-1 example, verbatim except for `main`, which runs the workflow
// in-process instead of serving it.
use nanoflow::prelude::*;            // node, workflow, NodeError, Runner, ...
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order { pub id: String, pub qty: u32, pub unit_cents: u64 }
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Priced { pub id: String, pub total_cents: u64 }

#[node]                                        // async or sync fn, exactly one input
async fn price(o: Order) -> Result<Priced, NodeError> {
    if o.qty == 0 { return Err(NodeError::permanent("qty must be at least 1")); }
    Ok(Priced { id: o.id, total_cents: o.qty as u64 * o.unit_cents })
}
#[node(retries = 3, backoff = "50ms", timeout = "2s")]
fn tax(p: Priced) -> u64 { p.total_cents / 10 }          // infallible: plain T is fine
#[node]
fn shipping(p: Priced) -> u64 { if p.total_cents > 10_000 { 0 } else { 500 } }
#[node]
fn total(parts: (u64, u64)) -> u64 { parts.0 + parts.1 }   // fan-in: a tuple, in written order

workflow! {
    /// Prices an order, computes tax and shipping in parallel, then totals.
    #[trigger(http = "POST /checkout")]
    pub checkout: price -> (tax, shipping) -> total;
}

#[tokio::main]
async fn main() -> Result<(), nanoflow::Error> {
    let order = Order { id: "o-1".into(), qty: 3, unit_cents: 1000 };
    let due: u64 = checkout.run(order).await?;
    assert_eq!(due, 300 + 500);
    let _runner = Runner::new().workflow(checkout);
    Ok(())
}
