use nanoflow::prelude::*;

#[node(isolation = "vm")]
fn charge(cents: u64) -> u64 {
    cents
}

fn main() {}
