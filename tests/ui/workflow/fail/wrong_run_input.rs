use nanoflow::prelude::*;

#[node]
fn price(cents: u64) -> u64 {
    cents
}

workflow! {
    pub checkout: price;
}

#[tokio::main]
async fn main() {
    let _ = checkout.run("ten").await;
}
