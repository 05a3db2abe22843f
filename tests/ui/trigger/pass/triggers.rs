use nanoflow::prelude::*;
use nanoflow::TriggerDef;

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
}

fn main() {
    let triggers = &charging.graph().triggers;
    assert_eq!(triggers.len(), 3);
    assert!(matches!(triggers[1], TriggerDef::Http { method: "PUT", path: "/charges/{id}" }));
    assert!(matches!(paying.graph().triggers[0], TriggerDef::Http { method: "POST", path: "/pay" }));
    assert_eq!(nightly.graph().triggers.len(), 2);
    assert_eq!(every_five.graph().triggers.len(), 1);
}
