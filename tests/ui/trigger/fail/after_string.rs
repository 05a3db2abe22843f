use nanoflow::prelude::*;

#[node]
fn email(cents: u64) -> String {
    cents.to_string()
}

workflow! {
    pub checkout: email as pay;

    #[trigger(after = "checkout")]
    pub notify: email;
}

fn main() {}
