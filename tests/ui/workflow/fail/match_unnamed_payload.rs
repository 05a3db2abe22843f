use nanoflow::prelude::*;

#[node]
fn lookup(key: String) -> Option<Option<u64>> {
    Some(key.parse().ok())
}
#[node]
fn found(n: u64) -> String {
    format!("found {n}")
}
#[node]
fn missing(_: ()) -> String {
    "missing".into()
}

workflow! {
    pub lookups: lookup -> match {
        Some(inner) => match { Some(n) => found, None => missing as missing_inner },
        None => missing,
    };
}

#[tokio::main]
async fn main() {
    let _ = lookups.run("1".into()).await;
}
