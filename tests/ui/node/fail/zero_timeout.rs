use nanoflow::prelude::*;

#[node(timeout = "0s")]
fn charge(cents: u64) -> u64 {
    cents
}

fn main() {}
