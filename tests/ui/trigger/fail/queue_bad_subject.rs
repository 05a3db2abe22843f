use nanoflow::prelude::*;

#[node]
fn charge(cents: u64) -> u64 {
    cents
}

workflow! {
    #[trigger(queue = "orders..created")]
    pub by_queue: charge;

    #[trigger(queue = "orders.>.eu")]
    pub by_wildcard: charge;
}

fn main() {}
