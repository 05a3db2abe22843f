use nanoflow::prelude::*;

#[node]
fn lookup(key: String) -> Option<u64> {
    key.parse().ok()
}
#[node]
fn found(n: u64) -> String {
    format!("found {n}")
}
#[node]
fn missing(_: ()) -> u64 {
    0
}

workflow! {
    pub lookups: lookup -> match { Some(n) => found, None => missing };
}

fn main() {}
