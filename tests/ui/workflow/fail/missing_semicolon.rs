use nanoflow::prelude::*;

#[node]
fn price(cents: u64) -> u64 {
    cents
}

workflow! {
    pub checkout: price
    pub other: price;
}

#[tokio::main]
async fn main() {
    let _ = checkout.run(1).await;
    let _ = other.run(1).await;
}
