use nanoflow::prelude::*;

#[node]
fn price(qty: u32) -> u64 {
    u64::from(qty) * 100
}
#[node]
fn email(cents: u64) -> String {
    cents.to_string()
}

workflow! {
    #[trigger(after = price)]
    pub notify: email;

    #[trigger(after = chekout)]
    pub notify_again: email as email_again;
}

fn main() {}
