use nanoflow::prelude::*;

#[node]
fn charge(cents: u64) -> u64 {
    cents
}

workflow! {
    #[trigger(queue = "orders.created", on = "insert")]
    pub checkout: charge;
}

fn main() {}
