use nanoflow::prelude::*;

#[derive(Debug, Clone)]
struct Order {
    qty: u32,
}

#[node]
fn count(order: Order) -> u32 {
    order.qty
}

fn main() {}
