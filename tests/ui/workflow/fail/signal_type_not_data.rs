use nanoflow::prelude::*;

pub struct Approval {
    pub by: String,
}

#[node]
fn hold(cents: u64) -> u64 {
    cents
}
// Not reported: the signal's type already is.
#[node]
fn decide(got: (u64, String)) -> String {
    got.1
}

workflow! {
    pub approve: hold -> signal(approval: Approval) -> decide;
}

fn main() {}
