use nanoflow::prelude::*;

#[node]
fn is_large(n: u64) -> bool {
    n > 1000
}
#[node]
fn manual(n: u64) -> u64 {
    n
}

workflow! {
    pub no_else: is_large -> if is_large as again { manual };
    pub no_branch: if is_large manual;
}

#[tokio::main]
async fn main() {
    let _ = no_else.run(1).await;
    let _ = no_branch.run(1).await;
}
