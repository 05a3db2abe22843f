use nanoflow::prelude::*;

#[node]
fn count(customer: String, seen: &mut State<u64>) -> u64 {
    **seen += 1;
    customer.len() as u64 + **seen
}

fn main() {}
