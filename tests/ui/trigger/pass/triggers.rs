use nanoflow::prelude::*;
use nanoflow::TriggerDef;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: i64,
}
#[node]
fn on_order(e: DbEvent<Order>) -> u64 {
    e.new.map_or(0, |o| o.id as u64)
}

mod shop {
    use nanoflow::prelude::*;

    #[nanoflow::node]
    fn bill(cents: u64) -> u64 {
        cents
    }

    workflow! {
        pub billing: bill;
    }
}

#[node]
fn tick(t: Tick) -> i64 {
    t.scheduled_ms
}
#[node]
fn charge(cents: u64) -> u64 {
    cents
}

workflow! {
    /// Every five minutes, in Paris time, queueing overlapping runs.
    #[trigger(cron = "0 */5 * * * *", tz = "Europe/Paris", overlap = "queue")]
    pub every_five: tick;

    /// Five fields (no seconds), names for months and days, and a second schedule.
    #[trigger(cron = "30 3 * JAN-MAR MON-FRI")]
    #[trigger(cron = "@daily", overlap = "concurrent")]
    pub nightly: tick;

    /// Several routes, with parameters; the same path with two methods.
    #[trigger(http = "POST /charges")]
    #[trigger(http = "PUT /charges/{id}")]
    #[trigger(http = "GET /charges/{id}/status")]
    pub charging: charge;

    /// The method defaults to POST; `/` is a route like any other.
    #[trigger(http = "/pay")]
    #[trigger(http = "GET /")]
    pub paying: charge;

    /// A queue, with wildcards; several triggers of different kinds.
    #[trigger(queue = "orders.created")]
    #[trigger(queue = "orders.*.eu")]
    #[trigger(http = "/orders")]
    pub queued: charge as queued_charge;

    /// Database events: all operations by default, `public` by default.
    #[trigger(postgres = "orders")]
    #[trigger(postgres = "sales.orders", on = "insert | UPDATE")]
    pub changes: on_order;

    /// Chained after workflows here and elsewhere (input: their output, `u64`).
    #[trigger(after = queued)]
    #[trigger(after = shop::billing)]
    pub follow_up: charge as follow_charge;
}

fn main() {
    let triggers = &charging.graph().triggers;
    assert_eq!(triggers.len(), 3);
    assert!(matches!(triggers[1], TriggerDef::Http { method: "PUT", path: "/charges/{id}" }));
    assert!(matches!(paying.graph().triggers[0], TriggerDef::Http { method: "POST", path: "/pay" }));
    assert_eq!(nightly.graph().triggers.len(), 2);
    assert_eq!(every_five.graph().triggers.len(), 1);
    assert!(matches!(queued.graph().triggers[1], TriggerDef::Queue { subject: "orders.*.eu" }));
    let t = &changes.graph().triggers;
    assert!(matches!(t[0], TriggerDef::Postgres { table: "public.orders", on: ["insert", "update", "delete"] }));
    assert!(matches!(t[1], TriggerDef::Postgres { table: "sales.orders", on: ["insert", "update"] }));
    let t = &follow_up.graph().triggers;
    assert!(matches!(t[0], TriggerDef::After { workflow: "queued" }));
    assert!(matches!(t[1], TriggerDef::After { workflow: "billing" }));
}
