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
    pub zero: split -> map(score, concurrency = 0) -> total;
    pub unknown: split -> map(score as score_2, parallel = 4) -> total as total_2;
    pub twice: split -> map(score as score_3, concurrency = 2, concurrency = 3) -> total as total_3;
}

fn main() {}
