use nanoflow::prelude::*;

/// Not a `std::error::Error`, and no `From` impl into `NodeError`.
#[derive(Debug)]
struct Declined;

#[node]
fn charge(cents: u64) -> Result<u64, Declined> {
    if cents == 0 {
        return Err(Declined);
    }
    Ok(cents)
}

fn main() {}
