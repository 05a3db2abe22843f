use nanoflow::prelude::*;

#[derive(Debug)]
struct Declined;

type Result<T> = std::result::Result<T, Declined>;

#[node]
fn charge(cents: u64) -> Result<u64> {
    if cents == 0 {
        return Err(Declined);
    }
    Ok(cents)
}

fn main() {}
