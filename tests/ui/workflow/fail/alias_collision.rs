use nanoflow::prelude::*;

#[node]
fn charge(cents: u64) -> u64 {
    cents
}
#[node]
fn refund(cents: u64) -> u64 {
    cents
}

workflow! {
    pub checkout: charge -> refund -> charge as refund;
}

fn main() {}
