use nanoflow::prelude::*;

#[node]
fn charge(cents: u64) -> u64 {
    cents
}

workflow! {
    pub checkout: charge;
    pub checkout: charge;
}

#[tokio::main]
async fn main() {
    let _ = checkout.run(1).await;
}
