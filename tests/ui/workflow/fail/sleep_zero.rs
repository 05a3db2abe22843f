use nanoflow::prelude::*;

#[node]
fn hold(n: u64) -> u64 {
    n
}
#[node]
fn stamp(n: u64) -> u64 {
    n + 1
}

workflow! {
    pub later: hold -> sleep("0s") -> stamp;
    pub soon: hold -> sleep("10 parsecs") -> stamp;
    pub first: sleep("1s") -> hold;
}

fn main() {}
