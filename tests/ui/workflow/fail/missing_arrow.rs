use nanoflow::prelude::*;

#[node]
fn price(cents: u64) -> u64 {
    cents
}
#[node]
fn total(cents: u64) -> u64 {
    cents
}

workflow! {
    pub checkout: price total;
}

#[tokio::main]
async fn main() {
    let _ = checkout.run(1).await;
}
