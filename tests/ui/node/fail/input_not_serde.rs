use nanoflow::prelude::*;

#[derive(Debug, Clone)]
struct Order {
    qty: u32,
}

#[node]
fn count(order: Order) -> u32 {
    order.qty
}

// The node is still declared: the workflow and its uses add no errors of their own.
workflow! {
    pub counting: count;
}

#[tokio::main]
async fn main() {
    let _ = counting.run(Order { qty: 1 }).await;
}
