use nanoflow::prelude::*;

#[node(retries = 3, timeout = "2s", retries = 5)]
fn charge(cents: u64) -> u64 {
    cents
}

fn main() {}
