use nanoflow::prelude::*;

#[node]
fn price(cents: u64) -> u64 {
    cents
}

workflow! {
    pub checkout: price -> 42;
}

#[tokio::main]
async fn main() {
    let _ = checkout.run(1).await;
}
