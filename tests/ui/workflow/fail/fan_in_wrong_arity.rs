use nanoflow::prelude::*;

#[node]
fn start(n: u64) -> u64 {
    n
}
#[node]
fn a(n: u64) -> u64 {
    n + 1
}
#[node]
fn b(n: u64) -> u64 {
    n + 2
}
#[node]
fn c(n: u64) -> u64 {
    n + 3
}
#[node]
fn sum(parts: (u64, u64)) -> u64 {
    parts.0 + parts.1
}

workflow! {
    pub flow: start -> (a, b, c) -> sum;
}

fn main() {}
