use nanoflow::prelude::*;

#[node]
fn validate(order: String) -> u64 {
    order.len() as u64
}
#[node]
fn confirm(cents: u64) -> String {
    format!("charged {cents}")
}

workflow! {
    // A broken sub-workflow is one error; the workflow using it adds none.
    pub payment_flow: ;
    pub checkout: validate -> payment_flow -> confirm;
}

#[tokio::main]
async fn main() {
    let _ = checkout.run("o-1".into()).await;
}
