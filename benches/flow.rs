//! What durable waits cost (issue 15), with the SQLite journal on, in one run:
//! - memory: the runner's resident set before and after 10,000 runs reached
//!   `signal(go: Go)` and wait (no task, no memory of theirs beyond their record), against the
//!   same runner's growth over 10,000 runs that finished (the baseline);
//! - latency: from `POST /runs/{id}/signals/go` sent to the next step started, sequentially,
//!   against the latency of starting a fresh run of a one-node workflow (`POST /ping`).
//!
//! `cargo bench -p nanoflow --bench flow` (env `FLOW_RUNS`, default 10000)
#![allow(missing_docs)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use nanoflow::prelude::*;
use nanoflow::ServeConfig;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Serialize, Deserialize, nanoflow::JsonSchema)]
pub struct Go {
    pub ok: bool,
}

/// When each run's step after the signal started, by the run's input.
static STARTED: LazyLock<Mutex<HashMap<u64, Instant>>> = LazyLock::new(Default::default);

#[node]
fn hold(x: u64) -> u64 {
    x
}
#[node]
fn next(parts: (u64, Go)) -> u64 {
    STARTED.lock().unwrap().insert(parts.0, Instant::now());
    parts.0
}
#[node]
fn pong(x: u64) -> u64 {
    STARTED.lock().unwrap().insert(x, Instant::now());
    x
}

workflow! {
    #[trigger(http = "POST /wait")]
    waits: hold -> signal(go: Go) -> next;

    #[trigger(http = "POST /ping")]
    ping: pong;
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|n| n.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

/// One request on a fresh connection: status and body.
async fn send(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn run_id(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["run_id"].as_str().unwrap().to_owned()
}

/// Sends `n` requests to `path` (bodies `from..from+n`), 32 at a time; their replies.
async fn many(addr: SocketAddr, path: &'static str, from: u64, n: u64) -> Vec<(u16, String)> {
    let mut out = Vec::with_capacity(n as usize);
    let mut next = from;
    while next < from + n {
        let batch: Vec<_> = (next..(next + 32).min(from + n))
            .map(|i| tokio::spawn(async move { send(addr, path, &i.to_string()).await }))
            .collect();
        next += batch.len() as u64;
        for t in batch {
            out.push(t.await.unwrap());
        }
    }
    out
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("FLOW_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("nanoflow-bench-flow-{}", nanoflow::RunId::new()));
    let server = Runner::new()
        .workflow(waits)
        .workflow(ping)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(dir.join("journal.db")),
            ..ServeConfig::default()
        })
        .await
        .unwrap();
    let addr = server.local_addr();
    // Warm up both paths (allocator, SQLite caches, connections).
    let _ = many(addr, "/ping", 1_000_000, 2_000).await;

    // Baseline: the resident set's growth over `n` runs that finished.
    let before_finished = rss_kib();
    let done = many(addr, "/ping", 2_000_000, n).await;
    assert!(done.iter().all(|(s, _)| *s == 200));
    let after_finished = rss_kib();

    // `n` runs that wait for their signal.
    let before_waiting = rss_kib();
    let waiting = many(addr, "/wait", 0, n).await;
    assert!(
        waiting
            .iter()
            .all(|(s, b)| *s == 202 && b.contains("waiting")),
        "{:?}",
        waiting.first()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_waiting = rss_kib();
    let finished_mib = after_finished.saturating_sub(before_finished) as f64 / 1024.0;
    let waiting_mib = after_waiting.saturating_sub(before_waiting) as f64 / 1024.0;
    println!("memory: {n} waiting runs add {waiting_mib:.1} MiB to the runner's resident set (target <= 50 MB); {n} finished runs add {finished_mib:.1} MiB (baseline)");

    // Latency: signal sent -> next step started, one at a time, over 300 of the waiting runs,
    // against a fresh one-node run's request -> node started.
    let ids: Vec<(u64, String)> = waiting
        .iter()
        .take(300)
        .enumerate()
        .map(|(i, (_, body))| (i as u64, run_id(body)))
        .collect();
    let mut signal = Vec::new();
    for (input, id) in &ids {
        let sent = Instant::now();
        let (status, body) = send(addr, &format!("/runs/{id}/signals/go"), r#"{"ok":true}"#).await;
        assert_eq!(status, 202, "{body}");
        let started = loop {
            if let Some(at) = STARTED.lock().unwrap().get(input) {
                break *at;
            }
            tokio::time::sleep(Duration::from_micros(50)).await;
        };
        signal.push(started.saturating_duration_since(sent));
    }
    let mut fresh = Vec::new();
    for i in 0..300u64 {
        let input = 3_000_000 + i;
        let sent = Instant::now();
        let (status, _) = send(addr, "/ping", &input.to_string()).await;
        assert_eq!(status, 200);
        let started = *STARTED.lock().unwrap().get(&input).unwrap();
        fresh.push(started.saturating_duration_since(sent));
    }
    let (signal_p50, fresh_p50) = (p50(signal), p50(fresh));
    println!(
        "latency: signal received -> next step started p50 {:.2} ms (target <= 5 ms); a new run's request -> its node started p50 {:.2} ms (baseline); ratio {:.1}x",
        signal_p50.as_secs_f64() * 1e3,
        fresh_p50.as_secs_f64() * 1e3,
        signal_p50.as_secs_f64() / fresh_p50.as_secs_f64().max(1e-9)
    );
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
