use nanoflow::prelude::*;

#[derive(Debug, Clone)]
struct Receipt {
    cents: u64,
}

#[node]
fn receipt(cents: u64) -> Receipt {
    Receipt { cents }
}
#[node]
fn print(r: Receipt) -> String {
    r.cents.to_string()
}

// Reported once per node signature using `Receipt`, and nowhere else: not at the edge
// `receipt -> print`, nor in the workflow.
workflow! {
    pub printing: receipt -> print;
}

fn main() {}
