use nanoflow::prelude::*;

#[node(name = "charge card")]
fn charge(cents: u64) -> u64 {
    cents
}

fn main() {}
