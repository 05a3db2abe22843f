use nanoflow::prelude::*;

#[node]
fn size(n: u64) -> u64 {
    n
}
#[node]
fn big(n: u64) -> String {
    format!("big {n}")
}
#[node]
fn small(n: u64) -> String {
    format!("small {n}")
}

workflow! {
    pub sizing: if size { big } else { small };
}

fn main() {}
