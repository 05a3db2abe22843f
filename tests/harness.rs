//! `nanoflow::testing` (feature `testing`): retries, backoff, timeouts and cron schedules under
//! a virtual clock, and crash injection after every journal write. This file is also the
//! example to copy for your own workflows' tests.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nanoflow::prelude::*;
use nanoflow::testing::Harness;

// ---- a workflow with retries and long backoff ----------------------------------------------

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

/// Fails three times, then succeeds: needs all three retries, 30 s of backoff each (jittered
/// between 15 and 30 s).
#[node(retries = 3, backoff = "30s")]
fn flaky(x: u64) -> Result<u64, NodeError> {
    if FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) < 3 {
        return Err(NodeError::retryable("upstream not ready"));
    }
    Ok(x + 1)
}

#[node]
fn double(x: u64) -> u64 {
    x * 2
}

workflow! {
    pub retried: flaky -> double;
}

#[test]
fn three_retries_with_30s_backoff_complete_in_milliseconds() {
    let h = Harness::new();
    let wall = Instant::now();
    assert_eq!(h.run(retried, 20).unwrap(), 42);
    let took = wall.elapsed();
    let virtual_time = h.elapsed();
    eprintln!("3 retries: {virtual_time:?} of virtual time in {took:?} of wall time");
    assert_eq!(FLAKY_CALLS.load(Ordering::SeqCst), 4);
    assert!(
        virtual_time >= Duration::from_secs(45) && virtual_time <= Duration::from_secs(90),
        "{virtual_time:?}"
    );
    assert!(took < Duration::from_secs(1), "{took:?} of wall time");
}

// ---- a timeout ------------------------------------------------------------------------------

#[node(timeout = "2s", retries = 1, backoff = "1s")]
async fn stuck(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    x
}

workflow! {
    pub times_out: stuck;
}

#[test]
fn timeouts_fire_on_the_virtual_clock() {
    let h = Harness::new();
    let wall = Instant::now();
    let err = h.run(times_out, 1).unwrap_err();
    assert_eq!(err.code(), "node_timeout", "{err}");
    // Two attempts of 2 s, and a backoff of 0.5 to 1 s between them.
    let t = h.elapsed();
    assert!(
        t >= Duration::from_millis(4500) && t <= Duration::from_secs(5),
        "{t:?}"
    );
    assert!(wall.elapsed() < Duration::from_secs(1));
}

// ---- a cron schedule --------------------------------------------------------------------------

#[node]
fn report(t: Tick) -> i64 {
    t.scheduled_ms
}

workflow! {
    #[trigger(cron = "0 */15 * * * *")]
    pub quarterly: report;
}

#[test]
fn cron_schedules_fire_at_their_times_without_waiting() {
    // 2026-01-01T00:05:00Z.
    let h = Harness::new().starting_at_ms(1_767_225_900_000);
    let ticks = h.cron(quarterly, 4).unwrap();
    let scheduled: Vec<i64> = ticks.iter().map(|(t, _)| t.scheduled_ms).collect();
    let quarter = 15 * 60 * 1000;
    let first = 1_767_225_600_000 + quarter; // 00:15
    assert_eq!(
        scheduled,
        [
            first,
            first + quarter,
            first + 2 * quarter,
            first + 3 * quarter
        ]
    );
    for (tick, outcome) in &ticks {
        assert_eq!(outcome.as_ref().unwrap(), &tick.scheduled_ms);
        assert_eq!(tick.fired_ms, tick.scheduled_ms, "fired on time");
    }
    assert_eq!(h.now_ms(), first + 3 * quarter);
}

// ---- crash injection ------------------------------------------------------------------------

/// How many times each node ran, per order: the nodes' own ledger, independent of the
/// harness's counts.
static LEDGER: Mutex<Option<HashMap<(String, &'static str), u32>>> = Mutex::new(None);

fn ledger(id: &str, step: &'static str) {
    let mut l = LEDGER.lock().unwrap();
    *l.get_or_insert_with(HashMap::new)
        .entry((id.to_owned(), step))
        .or_default() += 1;
}

fn ran(id: &str, step: &'static str) -> u32 {
    LEDGER
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|l| l.get(&(id.to_owned(), step)).copied())
        .unwrap_or(0)
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Order {
    pub id: String,
    pub cents: u64,
}

#[node]
fn reserve(o: Order) -> Order {
    ledger(&o.id, "reserve");
    o
}

#[node(retries = 2, backoff = "10s")]
fn charge(o: Order) -> Result<Order, NodeError> {
    ledger(&o.id, "charge");
    // The first attempt for each order fails: a retry is journaled too.
    if ran(&o.id, "charge") == 1 {
        return Err(NodeError::retryable("card network busy"));
    }
    Ok(o)
}

#[node]
fn ship(o: Order) -> String {
    ledger(&o.id, "ship");
    format!("shipped {} for {}", o.id, o.cents)
}

workflow! {
    pub fulfil: reserve -> charge -> ship;
}

#[test]
fn a_run_stopped_after_any_journal_write_resumes_without_repeating_a_completed_step() {
    let h = Harness::new();
    // Journal writes of one run: reserve, charge (failed), charge, ship, the finish.
    for k in 0..=5 {
        let id = format!("o-{k}");
        let order = Order {
            id: id.clone(),
            cents: 700,
        };
        let crashed = h.crash(fulfil, order, k).unwrap();
        assert_eq!(
            crashed.output.as_ref().unwrap(),
            &format!("shipped {id} for 700")
        );
        assert_eq!(crashed.crashed, k < 5, "crash after {k} writes");
        crashed.assert_completed_steps_ran_once();
        // The nodes' own ledger agrees: what completed before the crash ran once; the step in
        // flight at the crash may have run again (at-least-once), nothing else.
        for step in ["reserve", "ship"] {
            let n = ran(&id, step);
            if crashed.completed_before_crash.iter().any(|s| s == step) {
                assert_eq!(n, 1, "{step} after a crash at write {k}");
            } else {
                assert!((1..=2).contains(&n), "{step} ran {n} times (crash at {k})");
            }
        }
    }
}
