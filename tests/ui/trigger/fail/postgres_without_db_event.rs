use nanoflow::prelude::*;

#[node]
fn charge(cents: u64) -> u64 {
    cents
}

workflow! {
    #[trigger(postgres = "public.orders", on = "insert")]
    pub checkout: charge;
}

fn main() {}
