use nanoflow::prelude::*;

#[node(retries = -1)]
fn charge(cents: u64) -> u64 {
    cents
}

fn main() {}
