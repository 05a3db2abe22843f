use nanoflow::prelude::*;

#[node(retires = 3)]
fn charge(cents: u64) -> u64 {
    cents
}

fn main() {}
