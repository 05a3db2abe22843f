use nanoflow::prelude::*;

#[node]
fn found(n: u64) -> String {
    format!("found {n}")
}
#[node]
fn missing(_: ()) -> String {
    "missing".into()
}

workflow! {
    pub lookups: match { Some(n) => found, None => missing };
}

#[tokio::main]
async fn main() {
    let _ = lookups.run(Some(1)).await;
}
