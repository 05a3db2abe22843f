//! Cron triggers served by a real runner: fire times on a seconds-level schedule, and the
//! overlap policies. (DST handling is unit-tested in the runtime's `triggers::cron`.)
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use nanoflow::prelude::*;
use nanoflow::ServeConfig;

static PUNCTUAL: Mutex<Vec<Tick>> = Mutex::new(Vec::new());
#[node]
fn record(t: Tick) -> i64 {
    PUNCTUAL.lock().unwrap().push(t);
    t.scheduled_ms
}

static SKIPPING: Mutex<Vec<Tick>> = Mutex::new(Vec::new());
#[node]
async fn long_job(t: Tick) -> i64 {
    SKIPPING.lock().unwrap().push(t);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    t.scheduled_ms
}

static CONCURRENT: Mutex<Vec<Tick>> = Mutex::new(Vec::new());
#[node]
async fn long_job_concurrent(t: Tick) -> i64 {
    CONCURRENT.lock().unwrap().push(t);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    t.scheduled_ms
}

workflow! {
    #[trigger(cron = "* * * * * *")]
    every_second: record;

    #[trigger(cron = "* * * * * *", overlap = "skip")]
    skipping: long_job;

    #[trigger(cron = "* * * * * *", tz = "Europe/Paris", overlap = "concurrent")]
    overlapping: long_job_concurrent;
}

fn config() -> ServeConfig {
    ServeConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        grace: Duration::from_secs(5),
        journal: None,
        ..ServeConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_on_schedule() {
    let server = Runner::new()
        .workflow(every_second)
        .start(config())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3600)).await;
    server.shutdown().await.unwrap();
    let ticks = PUNCTUAL.lock().unwrap().clone();
    assert!((3..=4).contains(&ticks.len()), "{ticks:?}");
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1].scheduled_ms - pair[0].scheduled_ms,
            1000,
            "{ticks:?}"
        );
    }
    for t in &ticks {
        assert_eq!(
            t.scheduled_ms % 1000,
            0,
            "scheduled on whole seconds: {t:?}"
        );
        let late = t.fired_ms - t.scheduled_ms;
        assert!(
            (0..400).contains(&late),
            "fired {late} ms after schedule: {t:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skips_ticks_while_the_previous_run_is_going() {
    let server = Runner::new()
        .workflow(skipping)
        .start(config())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(4600)).await;
    server.shutdown().await.unwrap();
    let ticks = SKIPPING.lock().unwrap().clone();
    // Each run takes 2.5 s, so of ~4 ticks only every third starts a run.
    assert!((1..=2).contains(&ticks.len()), "{ticks:?}");
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1].scheduled_ms - pair[0].scheduled_ms,
            3000,
            "{ticks:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_policy_overlaps_runs() {
    let server = Runner::new()
        .workflow(overlapping)
        .start(config())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3600)).await;
    server.shutdown().await.unwrap();
    let ticks = CONCURRENT.lock().unwrap().clone();
    assert!((3..=4).contains(&ticks.len()), "{ticks:?}");
}
