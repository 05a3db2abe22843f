use nanoflow::prelude::*;

#[node]
fn charge(cents: u64) -> String {
    format!("charge-{cents}")
}
#[node]
fn refund(charge_id: String) -> bool {
    !charge_id.is_empty()
}

workflow! {
    #[compensate(chrage => refund)]
    pub checkout: charge;
}

fn main() {}
