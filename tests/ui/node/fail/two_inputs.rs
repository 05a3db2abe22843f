use nanoflow::prelude::*;

#[node]
fn add(a: u32, b: u32) -> u32 {
    a + b
}
#[node]
fn double(n: u32) -> u32 {
    n * 2
}

// The node is still declared: workflows using it add no errors of their own.
workflow! {
    pub sum: add -> double;
}

#[tokio::main]
async fn main() {
    let _ = sum.run((1, 2)).await;
    let _ = add(1, 2);
}
