use nanoflow::prelude::*;

#[node]
fn charge(cents: u64) -> u64 {
    cents
}

workflow! {
    pub checkout: charge -> charge;
}

fn main() {}
