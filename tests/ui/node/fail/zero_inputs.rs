use nanoflow::prelude::*;

#[node]
fn start() -> u32 {
    1
}

fn main() {}
