use nanoflow::prelude::*;

#[node]
fn price(qty: u32) -> u64 {
    u64::from(qty) * 100
}
#[node]
fn email(address: String) -> String {
    address
}

workflow! {
    pub checkout: price;

    #[trigger(after = checkout)]
    pub notify: email;
}

fn main() {}
