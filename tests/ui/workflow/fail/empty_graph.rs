use nanoflow::prelude::*;

workflow! {
    pub checkout: ;
}

// The workflow is still declared: its uses add no errors of their own.
#[tokio::main]
async fn main() {
    let _ = Runner::new().workflow(checkout);
    let _ = checkout.run(1_u64).await;
    let due: u64 = checkout.run(1_u64).await.unwrap();
    assert_eq!(due, 1);
}
