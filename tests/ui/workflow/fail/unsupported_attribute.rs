use nanoflow::prelude::*;

#[node]
fn price(cents: u64) -> u64 {
    cents
}

workflow! {
    #[inline]
    pub checkout: price;
}

#[tokio::main]
async fn main() {
    let _ = checkout.run(1).await;
}
