use nanoflow::prelude::*;

#[node]
fn split(text: String) -> Vec<String> {
    text.split(',').map(str::to_owned).collect()
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
    pub scoring: split -> map(score, concurrency = 4) -> total;
}

fn main() {}
