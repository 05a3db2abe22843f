use nanoflow::prelude::*;

#[node(retries = 3, backoff = "2s", max_backoff = "1s")]
fn charge(cents: u64) -> u64 {
    cents
}

fn main() {}
