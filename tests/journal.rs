//! The journal through the runner's HTTP API: per-node timelines, retries, idempotency,
//! dead-letter and re-drive, run history, refusal of a corrupt journal.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use nanoflow::prelude::*;
use nanoflow::{ServeConfig, Server};
use support::{get, post_json, request};

static A_CALLS: AtomicU32 = AtomicU32::new(0);
static B_CALLS: AtomicU32 = AtomicU32::new(0);
static B_BROKEN: AtomicBool = AtomicBool::new(false);
static FLAKY: AtomicU32 = AtomicU32::new(0);

#[node]
fn first(x: u64) -> u64 {
    A_CALLS.fetch_add(1, Ordering::SeqCst);
    x + 1
}
#[node]
fn second(x: u64) -> Result<u64, NodeError> {
    B_CALLS.fetch_add(1, Ordering::SeqCst);
    if B_BROKEN.load(Ordering::SeqCst) {
        return Err(NodeError::permanent("downstream is broken"));
    }
    Ok(x * 2)
}
#[node]
fn third(x: u64) -> String {
    format!("result {x}")
}
#[node(retries = 3, backoff = "5ms")]
fn flaky(x: u64) -> Result<u64, NodeError> {
    if FLAKY.fetch_add(1, Ordering::SeqCst) < 2 {
        return Err(NodeError::retryable("not yet"));
    }
    Ok(x)
}
static ONCE_CALLS: AtomicU32 = AtomicU32::new(0);
#[node]
async fn counted(x: u64) -> u64 {
    ONCE_CALLS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    x
}

workflow! {
    #[trigger(http = "/pipeline")]
    pipeline: first -> second -> third;

    #[trigger(http = "/flaky")]
    retried: flaky;

    #[trigger(http = "/once")]
    once: counted;
}

fn temp_journal() -> PathBuf {
    std::env::temp_dir()
        .join(format!("nanoflow-journal-{}", nanoflow::RunId::new()))
        .join("journal.db")
}

async fn start(journal: &Path) -> Server {
    Runner::new()
        .workflow(pipeline)
        .workflow(retried)
        .workflow(once)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(journal.to_path_buf()),
            ..ServeConfig::default()
        })
        .await
        .expect("server starts")
}

async fn wait_status(addr: SocketAddr, run_id: &str, status: &str) -> serde_json::Value {
    for _ in 0..200 {
        let r = get(addr, &format!("/runs/{run_id}")).await.json();
        if r["status"] == status {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("run {run_id} never reached {status}");
}

// The tests share node counters, so they run one after the other in this one test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_end_to_end() {
    let path = temp_journal();
    let server = start(&path).await;
    let addr = server.local_addr();

    // A run's timeline: each node with its attempt, duration and output.
    let r = request(
        addr,
        "POST",
        "/pipeline",
        &[
            ("content-type", "application/json"),
            ("prefer", "respond-async"),
        ],
        b"4",
    )
    .await;
    let run_id = r.json()["run_id"].as_str().unwrap().to_owned();
    let run = wait_status(addr, &run_id, "succeeded").await;
    assert_eq!(run["workflow"], "pipeline");
    assert_eq!(run["input"], 4);
    assert_eq!(run["output"], "result 10");
    let steps: Vec<&str> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["first", "second", "third"]);
    assert_eq!(run["timeline"][1]["output"], 10);
    assert_eq!(run["timeline"][1]["attempt"], 1);
    assert!(run["timeline"][0]["duration_us"].is_u64());

    // Retries are in the timeline, one entry per attempt.
    let r = post_json(addr, "/flaky", "9").await;
    assert_eq!(r.status, 200);
    let list = get(addr, "/runs?workflow=retried&limit=5").await.json();
    let flaky_id = list["runs"][0]["run_id"].as_str().unwrap().to_owned();
    let run = get(addr, &format!("/runs/{flaky_id}")).await.json();
    let attempts: Vec<(&str, u64)> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["status"].as_str().unwrap(),
                a["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(attempts, [("failed", 1), ("failed", 2), ("succeeded", 3)]);
    assert_eq!(run["timeline"][0]["error"]["kind"], "retryable");

    // Idempotency: the same key returns the same run; the node ran once.
    let key = [
        ("content-type", "application/json"),
        ("idempotency-key", "order-77"),
    ];
    let r1 = request(addr, "POST", "/once", &key, b"77").await;
    let r2 = request(addr, "POST", "/once", &key, b"77").await;
    assert_eq!((r1.status, r2.status), (200, 200));
    assert_eq!(r1.json(), 77);
    assert_eq!(r2.json(), 77);
    assert_eq!(ONCE_CALLS.load(Ordering::SeqCst), 1);
    let mut async_key = key.to_vec();
    async_key.push(("prefer", "respond-async"));
    let r3 = request(
        addr,
        "POST",
        "/once",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "order-78"),
            ("prefer", "respond-async"),
        ],
        b"78",
    )
    .await;
    let r4 = request(
        addr,
        "POST",
        "/once",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "order-78"),
            ("prefer", "respond-async"),
        ],
        b"78",
    )
    .await;
    assert_eq!(
        r3.json()["run_id"],
        r4.json()["run_id"],
        "a repeated key names the original run"
    );
    wait_status(addr, r3.json()["run_id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(ONCE_CALLS.load(Ordering::SeqCst), 2);

    // Dead-letter and re-drive: a failed run is listed, then re-driven from its failed node
    // without running the completed node again.
    B_BROKEN.store(true, Ordering::SeqCst);
    let a_before = A_CALLS.load(Ordering::SeqCst);
    let r = post_json(addr, "/pipeline", "1").await;
    assert_eq!(r.status, 500);
    let failed_id = r.json()["error"]["run_id"].as_str().unwrap().to_owned();
    let dead = get(addr, "/runs?status=failed").await.json();
    assert!(
        dead["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["run_id"] == failed_id.as_str()),
        "{dead}"
    );
    let run = get(addr, &format!("/runs/{failed_id}")).await.json();
    assert_eq!(run["error"]["node"], "second");
    assert_eq!(run["error"]["message"], "downstream is broken");

    B_BROKEN.store(false, Ordering::SeqCst);
    let b_before = B_CALLS.load(Ordering::SeqCst);
    let r = request(addr, "POST", &format!("/runs/{failed_id}/retry"), &[], b"").await;
    assert_eq!(r.status, 202);
    let run = wait_status(addr, &failed_id, "succeeded").await;
    assert_eq!(run["output"], "result 4");
    assert_eq!(
        A_CALLS.load(Ordering::SeqCst),
        a_before + 1,
        "the completed node ran again"
    );
    assert_eq!(B_CALLS.load(Ordering::SeqCst), b_before + 1);
    // Only failed runs can be re-driven.
    let r = request(addr, "POST", &format!("/runs/{failed_id}/retry"), &[], b"").await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["code"], "run_not_failed");

    // History: filters and pagination.
    let page = get(addr, "/runs?limit=2").await.json();
    assert_eq!(page["runs"].as_array().unwrap().len(), 2);
    let next = page["next_before"].as_str().unwrap();
    let page2 = get(addr, &format!("/runs?limit=2&before={next}"))
        .await
        .json();
    assert_ne!(page2["runs"][0]["run_id"], page["runs"][0]["run_id"]);
    assert_eq!(get(addr, "/runs?status=bogus").await.status, 400);
    server.shutdown().await.unwrap();

    // The journal survives a restart: the history is still there.
    let server = start(&path).await;
    let run = get(server.local_addr(), &format!("/runs/{failed_id}"))
        .await
        .json();
    assert_eq!(run["status"], "succeeded");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_journal_is_refused_at_start() {
    let path = temp_journal();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        b"this is not a database, just some bytes that are long enough to look like a header......",
    )
    .unwrap();
    let err = Runner::new()
        .workflow(pipeline)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(path.clone()),
            ..ServeConfig::default()
        })
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string())
            && text.contains("cannot be opened as a journal"),
        "{text}"
    );
}

#[tokio::test]
async fn a_journal_from_a_newer_version_is_refused() {
    let path = temp_journal();
    drop(nanoflow::journal::Journal::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
    }
    let err = nanoflow::journal::Journal::open(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("written by a newer nanoflow (schema 99"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unwritable_journal_location_is_a_clear_startup_error() {
    let err = Runner::new()
        .workflow(pipeline)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(PathBuf::from("/proc/nanoflow/journal.db")),
            ..ServeConfig::default()
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/proc/nanoflow") && err.contains("cannot create directory"),
        "{err}"
    );
}
