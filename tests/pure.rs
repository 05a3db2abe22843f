//! `#[node(pure)]` with the journal: a pure step's successors start without waiting for its
//! record to be durable, a recorded step's successors wait, and the pure step's record still
//! lands in the run's timeline.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nanoflow::prelude::*;
use nanoflow::ServeConfig;
use support::{get, post_json};

static AFTER_PURE: AtomicU32 = AtomicU32::new(0);
static AFTER_RECORDED: AtomicU32 = AtomicU32::new(0);

#[node(pure)]
fn doubled(x: u64) -> u64 {
    x * 2
}
#[node]
fn tripled(x: u64) -> u64 {
    x * 3
}
#[node]
fn after_pure(x: u64) -> u64 {
    AFTER_PURE.fetch_add(1, Ordering::SeqCst);
    x + 1
}
#[node]
fn after_recorded(x: u64) -> u64 {
    AFTER_RECORDED.fetch_add(1, Ordering::SeqCst);
    x + 1
}

workflow! {
    #[trigger(http = "POST /pure")]
    pure_first: doubled -> after_pure;

    #[trigger(http = "POST /recorded")]
    recorded_first: tripled -> after_recorded;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pure_steps_successors_do_not_wait_for_its_record() {
    let dir = std::env::temp_dir().join(format!("nanoflow-pure-{}", nanoflow::RunId::new()));
    let path = dir.join("journal.db");
    let server = Runner::new()
        .workflow(pure_first)
        .workflow(recorded_first)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(path.clone()),
            ..ServeConfig::default()
        })
        .await
        .unwrap();
    let addr = server.local_addr();
    assert_eq!(post_json(addr, "/pure", "1").await.json(), 3);

    // Another connection holds the journal's write lock: no commit can land meanwhile.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (pure_before, recorded_before) = (
        AFTER_PURE.load(Ordering::SeqCst),
        AFTER_RECORDED.load(Ordering::SeqCst),
    );
    let pure = tokio::spawn(async move { post_json(addr, "/pure", "20").await });
    let recorded = tokio::spawn(async move { post_json(addr, "/recorded", "20").await });

    // The pure step's successor runs although nothing of the run is durable yet.
    let mut waited = 0;
    while AFTER_PURE.load(Ordering::SeqCst) == pure_before {
        assert!(
            waited < 400,
            "the step after a pure one waited for the disk"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    // The recorded step's successor waits for its record; no answer comes before the end is
    // durable, pure or not.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(AFTER_RECORDED.load(Ordering::SeqCst), recorded_before);
    assert!(!pure.is_finished() && !recorded.is_finished());

    blocker.execute_batch("ROLLBACK").unwrap();
    let pure = pure.await.unwrap();
    assert_eq!(pure.status, 200);
    assert_eq!(pure.json(), 41);
    let recorded = recorded.await.unwrap();
    assert_eq!(recorded.json(), 61);
    assert_eq!(AFTER_RECORDED.load(Ordering::SeqCst), recorded_before + 1);

    // The pure step is in the timeline all the same: recorded, just not waited for.
    let runs = get(addr, "/runs?workflow=pure_first&limit=1").await.json();
    let id = runs["runs"][0]["run_id"].as_str().unwrap().to_owned();
    let run = get(addr, &format!("/runs/{id}")).await.json();
    let timeline = run["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 2, "{run}");
    let doubled = timeline.iter().find(|a| a["step"] == "doubled").unwrap();
    assert_eq!(doubled["output"], 40);
    assert!(timeline.iter().any(|a| a["step"] == "after_pure"));
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
