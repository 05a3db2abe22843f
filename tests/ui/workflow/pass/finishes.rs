#![deny(warnings, unused_qualifications)]

use nanoflow::prelude::*;

#[node]
fn price(qty: u64) -> u64 {
    qty * 250
}

mod v1 {
    use nanoflow::prelude::*;

    #[node]
    pub fn price(qty: u64) -> u64 {
        qty * 200
    }
}

workflow! {
    #[trigger(http = "POST /checkout")]
    pub checkout: price;

    /// The previous build's `checkout`, kept to finish the runs it started.
    #[finishes(checkout)]
    pub checkout_v1: v1::price;
}

fn main() {
    assert_eq!(checkout_v1.graph().finishes(), Some("checkout"));
    assert_eq!(checkout.graph().finishes(), None);
}
