use nanoflow::prelude::*;

#[node]
fn split(n: u64) -> Vec<u64> {
    (0..n).collect()
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
    pub scoring: split -> map(score, collect_errors) -> total;
}

fn main() {}
