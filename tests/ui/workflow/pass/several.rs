use nanoflow::prelude::*;

#[node]
fn charge(cents: u64) -> u64 {
    cents
}
#[node]
fn fee(cents: u64) -> u64 {
    cents + 30
}
#[node]
fn refund(cents: u64) -> i64 {
    -(cents as i64)
}

// Several workflows per invocation; the same node in several workflows; one node twice in a
// graph under an alias.
workflow! {
    /// Charges with a fee.
    pub pay: charge -> fee;
    /// Charges, retries once more, then refunds.
    pub(crate) pay_then_refund: charge -> charge as charge_again -> refund;
    /// Charges and refunds in parallel.
    both: charge -> (fee, refund);
}

// And several invocations per module.
workflow! {
    /// Just a refund.
    pub only_refund: refund;
}

#[tokio::main]
async fn main() {
    assert_eq!(pay.run(100).await.unwrap(), 130);
    assert_eq!(pay_then_refund.run(100).await.unwrap(), -100);
    assert_eq!(both.run(100).await.unwrap(), (130, -100));
    assert_eq!(only_refund.run(5).await.unwrap(), -5);
    let names: Vec<&str> = pay_then_refund.graph().steps.iter().map(|s| s.name).collect();
    assert_eq!(names, ["charge", "charge_again", "refund"]);
    let _runner = Runner::new().workflow(pay).workflow(pay_then_refund).workflow(both).workflow(only_refund);
}
