use nanoflow::prelude::*;

#[node]
fn validate(order: String) -> String {
    order
}
#[node]
fn charge(cents: u64) -> u64 {
    cents
}
#[node]
fn confirm(cents: u64) -> String {
    format!("charged {cents}")
}

workflow! {
    pub payment_flow: charge;
    pub checkout: validate -> payment_flow -> confirm;
}

fn main() {}
