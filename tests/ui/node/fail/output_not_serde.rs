use nanoflow::prelude::*;

#[derive(Debug, Clone)]
struct Receipt {
    cents: u64,
}

#[node]
fn receipt(cents: u64) -> Receipt {
    Receipt { cents }
}

fn main() {
    let _ = receipt(1).cents;
}
