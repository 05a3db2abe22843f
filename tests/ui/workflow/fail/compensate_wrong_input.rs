use nanoflow::prelude::*;

#[node]
fn charge(cents: u64) -> String {
    format!("charge-{cents}")
}
#[node]
fn refund(cents: u64) -> bool {
    cents > 0
}

workflow! {
    #[compensate(charge => refund)]
    pub checkout: charge;
}

fn main() {}
