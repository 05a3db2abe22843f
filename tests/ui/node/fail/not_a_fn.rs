use nanoflow::prelude::*;

#[node]
struct Price {
    cents: u64,
}

fn main() {
    let _ = Price { cents: 1 }.cents;
}
