use nanoflow::prelude::*;

#[node(timeout = 2)]
fn charge(cents: u64) -> u64 {
    cents
}

fn main() {}
