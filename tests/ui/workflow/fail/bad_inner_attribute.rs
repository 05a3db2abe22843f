use nanoflow::prelude::*;

#[node]
fn price(cents: u64) -> u64 {
    cents
}

workflow! {
    #![allow(dead_code)]
    pub checkout: price;
}

fn main() {}
