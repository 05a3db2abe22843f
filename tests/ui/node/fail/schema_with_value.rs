use nanoflow::prelude::*;

#[node(schema = true)]
fn double(n: u64) -> u64 {
    n * 2
}

fn main() {}
