use nanoflow::prelude::*;

#[node]
fn a(n: u64) -> u64 {
    n + 1
}
#[node]
fn b(n: u64) -> String {
    n.to_string()
}
#[node]
async fn c(s: String) -> usize {
    s.len()
}
#[node]
fn d(n: u64) -> u64 {
    n * 10
}
#[node]
fn e(parts: (usize, u64)) -> String {
    format!("{}:{}", parts.0, parts.1)
}
#[node]
fn f(n: u64) -> bool {
    n % 2 == 0
}
#[node]
fn g(parts: ((usize, u64), bool)) -> String {
    format!("{:?}", parts)
}

workflow! {
    /// A chain inside a fan-out.
    pub nested: a -> (b -> c, d) -> e;
    /// Groups inside groups.
    pub deeper: a -> ((b -> c, d), f) -> g;
    /// A single step.
    pub single: a;
    /// A group of one is just the branch.
    pub one: a -> (d) -> f;
}

#[tokio::main]
async fn main() {
    // a: 10; b -> c: "10" -> 2; d: 100.
    assert_eq!(nested.run(9).await.unwrap(), "2:100");
    assert_eq!(deeper.run(9).await.unwrap(), "((2, 100), true)");
    assert_eq!(single.run(1).await.unwrap(), 2);
    assert!(one.run(1).await.unwrap());
    assert_eq!(nested.graph().steps.len(), 5);
}
