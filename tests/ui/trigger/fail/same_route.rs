use nanoflow::prelude::*;

#[node]
fn tick(t: Tick) -> i64 {
    t.scheduled_ms
}
#[node]
fn charge(cents: u64) -> u64 {
    cents
}

workflow! {
    #[trigger(http = "POST /charge")]
    pub checkout: charge;
    #[trigger(http = "POST /charge")]
    pub recharge: charge;
}

fn main() {}
