use nanoflow::prelude::*;

#[node]
fn lookup(key: String) -> Option<u64> {
    key.parse().ok()
}
#[node]
fn found(n: u64) -> String {
    format!("found {n}")
}

workflow! {
    pub arrow: lookup -> match { Some(n) -> found };
    pub pattern: lookup -> match { 1 => found };
    pub empty: lookup -> match {};
}

#[tokio::main]
async fn main() {
    let _ = arrow.run("1".into()).await;
    let _ = pattern.run("1".into()).await;
    let _ = empty.run("1".into()).await;
}
