use nanoflow::prelude::*;

#[node]
fn tick(t: Tick) -> i64 {
    t.scheduled_ms
}
#[node]
fn charge(cents: u64) -> u64 {
    cents
}

workflow! {
    #[trigger(cron = "0 0 3 * * *", tz = "UTC", tz = "Europe/Paris")]
    pub nightly: tick;
}

fn main() {}
