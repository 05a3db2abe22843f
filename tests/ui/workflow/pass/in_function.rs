use nanoflow::prelude::*;

#[node]
fn double(n: u64) -> u64 {
    n * 2
}

#[tokio::main]
async fn main() {
    // Nodes and workflows may also be declared inside a function body.
    #[node]
    fn inc(n: u64) -> u64 {
        n + 1
    }

    workflow! {
        local: double -> inc;
    }

    assert_eq!(local.run(1).await.unwrap(), 3);
}
