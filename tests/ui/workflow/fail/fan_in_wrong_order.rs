use nanoflow::prelude::*;

#[node]
fn start(n: u64) -> u64 {
    n
}
#[node]
fn label(n: u64) -> String {
    n.to_string()
}
#[node]
fn double(n: u64) -> u64 {
    n * 2
}
#[node]
fn join(parts: (u64, String)) -> String {
    format!("{}{}", parts.0, parts.1)
}

workflow! {
    pub flow: start -> (label, double) -> join;
}

fn main() {}
