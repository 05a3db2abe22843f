use nanoflow::prelude::*;

#[node]
fn echo<T: Clone>(value: T) -> T {
    value
}

fn main() {}
