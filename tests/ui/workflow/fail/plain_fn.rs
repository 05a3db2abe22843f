use nanoflow::prelude::*;

#[node]
fn price(cents: u64) -> u64 {
    cents
}

fn total(cents: u64) -> u64 {
    cents
}

workflow! {
    pub checkout: price -> total;
}

fn main() {
    let _ = total(1);
}
