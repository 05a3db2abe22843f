//! Container isolation against the real Docker Engine: the same workflow gives the same outputs
//! and errors in containers as in-process; each security setting is checked on the created
//! container; crashes, OOM kills and hangs are replaced without hanging the runner.
//!
//! The containers run this very test binary: its `__nanoflow_node_server` test serves the node
//! named by `NANOFLOW_NODE_SERVE` (and does nothing in a normal test run).
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use nanoflow::isolation::{ContainerConfig, IsolationMode};
use nanoflow::prelude::*;
use nanoflow::{ServeConfig, Server};
use serde::{Deserialize, Serialize};
use support::{get, post_json};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub qty: u32,
    pub unit_cents: u64,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Priced {
    pub id: String,
    pub total_cents: u64,
}

#[node]
async fn price(o: Order) -> Result<Priced, NodeError> {
    if o.qty == 0 {
        return Err(NodeError::permanent("qty must be at least 1").with_status(422));
    }
    Ok(Priced {
        id: o.id,
        total_cents: o.qty as u64 * o.unit_cents,
    })
}
#[node]
fn tax(p: Priced) -> u64 {
    p.total_cents / 10
}
#[node]
fn shipping(p: Priced) -> u64 {
    if p.total_cents > 10_000 {
        0
    } else {
        500
    }
}
#[node]
fn total(parts: (u64, u64)) -> u64 {
    parts.0 + parts.1
}

#[node(retries = 1, backoff = "10ms")]
fn crash(code: i32) -> i32 {
    if code != 0 {
        std::process::exit(code);
    }
    0
}
#[node(memory = "32MiB")]
fn hog(megabytes: usize) -> usize {
    let mut v: Vec<Vec<u8>> = Vec::new();
    for _ in 0..megabytes {
        v.push(vec![1u8; 1 << 20]);
    }
    v.iter().map(|b| b.len()).sum::<usize>() >> 20
}
#[node(timeout = "500ms")]
async fn hang(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}
#[node]
fn where_am_i(_: ()) -> String {
    // In a container the process runs as the unprivileged user set on the image.
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .unwrap_or("?")
        .to_owned()
}

workflow! {
    #[trigger(http = "POST /checkout")]
    pub checkout: price -> (tax, shipping) -> total;

    #[trigger(http = "/crash")]
    pub crashing: crash;

    #[trigger(http = "/hog")]
    pub hogging: hog;

    #[trigger(http = "/hang")]
    pub hanging: hang;

    #[trigger(http = "/whoami")]
    pub whoami: where_am_i;
}

const SERVICE: &str = "nanoflow-tests";

fn runner() -> Runner {
    Runner::new()
        .workflow(checkout)
        .workflow(crashing)
        .workflow(hogging)
        .workflow(hanging)
        .workflow(whoami)
}

/// Serves one node when this binary runs inside a node container.
#[test]
fn __nanoflow_node_server() {
    if std::env::var_os("NANOFLOW_NODE_SERVE").is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    if let Some(served) = rt.block_on(runner().serve_node_if_requested()) {
        served.unwrap();
    }
}

fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide a Docker Engine (.ci/services-docker starts one)"
        );
        eprintln!("\n*** SKIPPED: no Docker Engine answers; container tests did not run ***\n");
    }
    ok
}

fn config(mode: IsolationMode) -> ServeConfig {
    ServeConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        journal: None,
        isolation: mode,
        containers: ContainerConfig {
            service: SERVICE.into(),
            min_warm: 1,
            max_per_node: 2,
            entrypoint_args: [
                "--exact",
                "__nanoflow_node_server",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ]
            .map(String::from)
            .to_vec(),
            ..ContainerConfig::default()
        },
        ..ServeConfig::default()
    }
}

async fn start(mode: IsolationMode) -> Server {
    runner().start(config(mode)).await.expect("server starts")
}

fn containers_of(node: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=nanoflow.service={SERVICE}"),
            "--filter",
            &format!("label=nanoflow.node={node}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

const ORDERS: [&str; 3] = [
    r#"{"id":"a","qty":3,"unit_cents":1000}"#,
    r#"{"id":"b","qty":20,"unit_cents":1000}"#,
    r#"{"id":"c","qty":0,"unit_cents":1000}"#,
];

// One test: the engine and the pools are shared, and the phases depend on each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_end_to_end() {
    if !docker_available() {
        return;
    }
    // The same requests in both modes give the same answers.
    let process = start(IsolationMode::Process).await;
    let mut expected = Vec::new();
    for body in ORDERS {
        let r = post_json(process.local_addr(), "/checkout", body).await;
        expected.push((r.status, r.json()));
    }
    process.shutdown().await.unwrap();
    assert_eq!(expected[0], (200, serde_json::json!(800)));

    let server = start(IsolationMode::Container).await;
    let addr = server.local_addr();
    for (body, want) in ORDERS.iter().zip(&expected) {
        let r = post_json(addr, "/checkout", body).await;
        let mut got = r.json();
        if let Some(e) = got.get_mut("error").and_then(|e| e.as_object_mut()) {
            e.remove("run_id");
        }
        let mut want = want.clone();
        if let Some(e) = want.1.get_mut("error").and_then(|e| e.as_object_mut()) {
            e.remove("run_id");
        }
        assert_eq!((r.status, got), want, "{body}");
    }

    // Security settings of a created container.
    let id = containers_of("price")
        .pop()
        .expect("a warm container for `price`");
    let inspect = Command::new("docker")
        .args(["inspect", &id])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let host = &info[0]["HostConfig"];
    assert_eq!(host["NetworkMode"], "none");
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert!(host["SecurityOpt"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == "no-new-privileges"));
    assert_eq!(host["Memory"], 256 << 20);
    assert_eq!(host["NanoCpus"], 1_000_000_000u64);
    assert_eq!(host["PidsLimit"], 64);
    assert_eq!(info[0]["Config"]["User"], "65534:65534");
    assert!(info[0]["Config"]["Image"]
        .as_str()
        .unwrap()
        .starts_with("nanoflow/nanoflow-tests-price:"));
    let r = post_json(addr, "/whoami", "null").await;
    assert_eq!(r.json(), "65534", "the node runs as an unprivileged user");
    let hog_id = containers_of("hog").pop().unwrap();
    let hog_info: serde_json::Value = serde_json::from_slice(
        &Command::new("docker")
            .args(["inspect", &hog_id])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        hog_info[0]["HostConfig"]["Memory"],
        32 << 20,
        "the node's own memory limit"
    );

    // Faults: a crash (retried once in a fresh container, then failed), an OOM kill, a hang.
    let r = post_json(addr, "/crash", "3").await;
    assert_eq!(r.status, 500);
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("exited with code 3"), "{message}");
    assert_eq!(
        post_json(addr, "/crash", "0").await.json(),
        0,
        "the pool replaced the crashed container"
    );

    let r = post_json(addr, "/hog", "200").await;
    assert_eq!(r.status, 500);
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("out of memory") || message.contains("exited with code 137"),
        "{message}"
    );
    assert_eq!(post_json(addr, "/hog", "4").await.json(), 4);

    let started = std::time::Instant::now();
    let r = post_json(addr, "/hang", "60000").await;
    assert_eq!(r.status, 504);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The replacement starts in the background; a call that comes before it is up gets the
    // retryable `503 container_pool_busy` after the node's 500 ms timeout (on a loaded machine
    // a container can take longer than that to start), so the test retries as a client would.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let replaced = loop {
        let r = post_json(addr, "/hang", "10").await;
        if r.status == 503
            && r.json()["error"]["code"] == "container_pool_busy"
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        break r.json();
    };
    assert_eq!(replaced, 10, "the hung container was replaced");

    assert_eq!(get(addr, "/healthz").await.status, 200);
    let metrics = String::from_utf8(get(addr, "/metrics").await.body).unwrap();
    assert!(
        metrics.contains("nanoflow_container_pool_size{node=\"price\"} "),
        "{metrics}"
    );
    assert!(
        metrics.contains("nanoflow_container_cold_starts_total{node=\"crash\"} "),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
    assert!(
        containers_of("price").is_empty(),
        "containers are removed at shutdown"
    );
}

#[tokio::test]
async fn an_unreachable_engine_is_a_clear_startup_error() {
    let err = nanoflow::isolation::connect_to("unix:///nonexistent/docker.sock")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unix:///nonexistent/docker.sock") && err.contains("Docker Engine"),
        "{err}"
    );
}
