use nanoflow::prelude::*;

#[node]
fn charge(cents: u64) -> u64 {
    cents
}

workflow! {
    #[defaults(retries = 2, timeout = "soon", isolation = "container")]
    pub checkout: charge;
}

fn main() {}
