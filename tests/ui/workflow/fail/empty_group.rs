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
    pub checkout: price -> () -> total;
}

#[tokio::main]
async fn main() {
    let _ = Runner::new().workflow(checkout);
    let _ = checkout.run(1_u64).await;
}
