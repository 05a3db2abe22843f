use nanoflow::prelude::*;

#[node]
fn on_order(e: DbEvent<u64>) -> u64 {
    e.id as u64
}

workflow! {
    #[trigger(postgres = "public.order-lines")]
    pub lines: on_order;

    #[trigger(postgres = "public.orders", on = "insert|upsert")]
    pub upserts: on_order;

    #[trigger(postgres = "public.orders", on = "insert|insert")]
    pub twice: on_order;
}

fn main() {}
