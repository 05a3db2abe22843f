use nanoflow::prelude::*;

#[node]
fn price(cents: u64) -> u64 {
    cents
}
#[node]
fn total(cents: u64) -> u64 {
    cents
}

workflow! {
    pub checkout: price -> totl;
}

fn main() {
    let _ = total(1);
}
