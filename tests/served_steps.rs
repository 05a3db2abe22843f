//! Steps of a runner without the journal (the path `--journal off` takes for a stateless,
//! in-process node with no retries or time limit): a node that panics, one that fails, one that
//! runs until its run is cancelled, and the per-node metrics of each, over HTTP.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nanoflow::prelude::*;
use nanoflow::{ServeConfig, Server};
use support::{get, post_json, request};

#[node]
fn double(x: u64) -> u64 {
    x * 2
}

#[node]
fn explode(x: u64) -> u64 {
    if x == 26 {
        panic!("unlucky {x}");
    }
    x
}

#[node]
fn refuse(x: u64) -> Result<u64, NodeError> {
    if x > 100 {
        return Err(NodeError::permanent(format!("{x} is too much")).with_status(422));
    }
    Ok(x)
}

#[node]
async fn linger(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_secs(30)).await;
    x
}

workflow! {
    #[trigger(http = "POST /calc")]
    calc: double -> explode -> refuse;

    #[trigger(http = "POST /slow")]
    slow: double -> linger;
}

async fn start() -> Server {
    Runner::new()
        .workflow(calc)
        .workflow(slow)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: None,
            ..ServeConfig::default()
        })
        .await
        .expect("server starts")
}

/// A counter or histogram count from `GET /metrics`, by its exact series.
async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = String::from_utf8(get(addr, "/metrics").await.body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_panic_a_failure_and_a_success_each_answer_and_count() {
    let server = start().await;
    let addr = server.local_addr();

    let ok = post_json(addr, "/calc", "21").await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    assert_eq!(ok.json(), serde_json::json!(42));

    // 13 doubles to 26, which `explode` panics on: the run fails, the runner serves on.
    let panicked = post_json(addr, "/calc", "13").await;
    assert_eq!(
        panicked.status,
        500,
        "{}",
        String::from_utf8_lossy(&panicked.body)
    );
    let error = panicked.json();
    assert_eq!(error["error"]["node"], "explode", "{error}");
    assert_eq!(error["error"]["code"], "node_panicked", "{error}");

    let failed = post_json(addr, "/calc", "60").await;
    assert_eq!(
        failed.status,
        422,
        "{}",
        String::from_utf8_lossy(&failed.body)
    );
    let error = failed.json();
    assert_eq!(error["error"]["node"], "refuse", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("120 is too much")),
        "{error}"
    );

    assert_eq!(
        metric(
            addr,
            r#"nanoflow_node_attempts_total{workflow="calc",node="refuse",outcome="failed"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            addr,
            r#"nanoflow_node_attempts_total{workflow="calc",node="double",outcome="succeeded"}"#
        )
        .await,
        3.0
    );
    assert_eq!(
        metric(
            addr,
            r#"nanoflow_node_attempts_total{workflow="calc",node="explode",outcome="failed"}"#
        )
        .await,
        1.0
    );
    server.shutdown().await.unwrap();
}

/// A run whose node is in progress (not finished on its first poll) is interrupted by its
/// cancellation, ends `cancelled`, and frees its slot at once.
#[tokio::test]
async fn a_step_in_progress_stops_when_its_run_is_cancelled() {
    let server = start().await;
    let addr = server.local_addr();
    let accepted = request(
        addr,
        "POST",
        "/slow",
        &[
            ("content-type", "application/json"),
            ("prefer", "respond-async"),
        ],
        b"4",
    )
    .await;
    assert_eq!(
        accepted.status,
        202,
        "{}",
        String::from_utf8_lossy(&accepted.body)
    );
    let run_id = accepted.json()["run_id"].as_str().unwrap().to_owned();
    // `linger` has started (its first step is done).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let cancelled = request(addr, "POST", &format!("/runs/{run_id}/cancel"), &[], b"").await;
    assert!(
        cancelled.status == 200 || cancelled.status == 202,
        "{} {}",
        cancelled.status,
        String::from_utf8_lossy(&cancelled.body)
    );
    loop {
        let run = get(addr, &format!("/runs/{run_id}")).await.json();
        if run["status"] == "cancelled" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the run did not stop: {run}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(
            addr,
            r#"nanoflow_node_attempts_total{workflow="slow",node="linger",outcome="succeeded"}"#
        )
        .await,
        0.0,
        "the interrupted node did not finish"
    );
    server.shutdown().await.unwrap();
}
