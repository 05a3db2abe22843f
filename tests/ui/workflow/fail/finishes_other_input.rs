use nanoflow::prelude::*;

#[node]
fn price(qty: u64) -> u64 {
    qty * 250
}
#[node]
fn price_v1(qty: u32) -> u64 {
    u64::from(qty) * 200
}
#[node]
fn tax(total: u64) -> u64 {
    total / 10
}

workflow! {
    #[trigger(http = "POST /checkout")]
    pub checkout: price;

    /// Runs of `checkout` recorded a `u64` input: this graph cannot take them.
    #[finishes(checkout)]
    pub checkout_v1: price_v1 as price;

    /// `tax` is a node, not a workflow.
    #[finishes(tax)]
    pub tax_v1: tax;
}

fn main() {}
