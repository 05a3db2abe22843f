use nanoflow::prelude::*;

#[node]
extern "C" fn double(n: u64) -> u64 {
    n * 2
}

fn main() {}
