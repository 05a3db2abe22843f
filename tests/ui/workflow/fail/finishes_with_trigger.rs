use nanoflow::prelude::*;

#[node]
fn price(qty: u64) -> u64 {
    qty * 250
}
#[node]
fn price_v1(qty: u64) -> u64 {
    qty * 200
}

workflow! {
    #[trigger(http = "POST /checkout")]
    pub checkout: price;

    /// The previous graph, kept to finish its runs: it may not start any.
    #[finishes(checkout)]
    #[trigger(http = "POST /old")]
    pub checkout_v1: price_v1 as price;

    #[finishes(checkout_v2)]
    pub checkout_v2: price_v1;
}

fn main() {}
