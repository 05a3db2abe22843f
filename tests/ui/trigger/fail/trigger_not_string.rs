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
    #[trigger(http = 8080)]
    pub checkout: charge;
}

fn main() {}
