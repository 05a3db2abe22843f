use nanoflow::prelude::*;

#[node]
fn count(n: u64) -> u64 {
    n
}
#[node]
fn score(n: u64) -> u64 {
    n * 2
}
#[node]
fn total(scores: Vec<u64>) -> u64 {
    scores.iter().sum()
}

workflow! {
    pub scoring: count -> map(score) -> total;
}

fn main() {}
