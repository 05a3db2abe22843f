//! End-to-end tests of the HTTP trigger over real loopback HTTP: every status the runner
//! answers with, async mode, overload, and graceful shutdown.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nanoflow::prelude::*;
use nanoflow::{ServeConfig, Server};
use serde::{Deserialize, Serialize};
use support::{get, post_json, request};

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
        return Err(NodeError::permanent("qty must be at least 1"));
    }
    if o.qty > 1000 {
        return Err(NodeError::permanent("too many").with_status(409));
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lookup {
    pub id: u64,
    pub verbose: Option<bool>,
}
#[node]
fn lookup(l: Lookup) -> String {
    format!("item {} verbose={}", l.id, l.verbose.unwrap_or(false))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rename {
    pub id: u64,
    pub name: String,
}
#[node]
fn rename(r: Rename) -> String {
    format!("{}={}", r.id, r.name)
}

static SLOW_DONE: AtomicU32 = AtomicU32::new(0);
#[node]
async fn slow(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    SLOW_DONE.fetch_add(1, Ordering::SeqCst);
    ms
}

#[node(timeout = "100ms")]
async fn too_slow(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

#[node]
fn boom(x: u64) -> u64 {
    if x == 7 {
        panic!("secret internal detail");
    }
    x
}

workflow! {
    #[trigger(http = "POST /checkout")]
    pub checkout: price -> (tax, shipping) -> total;

    #[trigger(http = "GET /items/{id}")]
    pub item: lookup;

    #[trigger(http = "PUT /items/{id}")]
    pub item_rename: rename;

    #[trigger(http = "/slow")]
    pub sleepy: slow;

    #[trigger(http = "/timeout")]
    pub timing_out: too_slow;

    #[trigger(http = "/boom")]
    pub panicking: boom;
}

async fn start(config: ServeConfig) -> Server {
    Runner::new()
        .workflow(checkout)
        .workflow(item)
        .workflow(item_rename)
        .workflow(sleepy)
        .workflow(timing_out)
        .workflow(panicking)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(temp_journal()),
            ..config
        })
        .await
        .expect("server starts")
}

/// A fresh journal file per server.
fn temp_journal() -> std::path::PathBuf {
    std::env::temp_dir()
        .join(format!("nanoflow-http-{}", nanoflow::RunId::new()))
        .join("journal.db")
}

const ORDER: &str = r#"{"id":"o-1","qty":3,"unit_cents":1000}"#;

#[tokio::test]
async fn ok_returns_the_output() {
    let server = start(ServeConfig::default()).await;
    let r = post_json(server.local_addr(), "/checkout", ORDER).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), serde_json::json!(800));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_specific_errors() {
    let server = start(ServeConfig {
        max_body: 64,
        ..ServeConfig::default()
    })
    .await;
    let addr = server.local_addr();

    let r = post_json(addr, "/checkout", "{\"id\": \"o-1\",\n \"qty\": }").await;
    assert_eq!(r.status, 400);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "malformed_json");
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(2), Some(9)),
        "{e}"
    );

    let r = request(
        addr,
        "POST",
        "/checkout",
        &[("content-type", "text/plain")],
        ORDER.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["error"]["code"], "unsupported_media_type");

    let big = format!(r#"{{"id":"{}","qty":1,"unit_cents":1}}"#, "x".repeat(100));
    let r = post_json(addr, "/checkout", &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "body_too_large");
    assert_eq!(r.json()["error"]["limit"], 64);

    let r = post_json(
        addr,
        "/checkout",
        r#"{"id":"o-1","qty":"three","unit_cents":1}"#,
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["code"], "invalid_input");
    assert_eq!(r.json()["error"]["path"], "qty");

    let r = post_json(addr, "/checkout", r#"{"id":"o-1","unit_cents":1}"#).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("missing field `qty`"));

    let r = get(addr, "/nowhere").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");

    let r = get(addr, "/checkout").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");

    // None of these created a run: a valid request is still the first run the server saw.
    server.shutdown().await.unwrap();
}

/// A body sent in chunks, without `Content-Length`, is read whole, within `--max-body`; the
/// bytes of several frames are put together in order.
#[tokio::test]
async fn chunked_bodies_are_read_whole_and_within_the_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(ServeConfig {
        max_body: 64,
        ..ServeConfig::default()
    })
    .await;
    let addr = server.local_addr();
    let send = |chunks: Vec<&'static str>| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /checkout HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
              content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
        for chunk in chunks {
            s.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                .await
                .unwrap();
            s.flush().await.unwrap();
            // Apart, so that the runner reads them as frames of their own.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        s.write_all(b"0\r\n\r\n").await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
            .await
            .unwrap()
            .unwrap();
        support::parse(&raw)
    };
    let r = send(vec![
        r#"{"id":"o-1","#,
        r#""qty":2,"#,
        r#""unit_cents":150}"#,
    ])
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), serde_json::json!(530));
    // Served without the router, the answer still declares its length.
    let length = r.body.len().to_string();
    assert_eq!(r.header("content-length"), Some(length.as_str()));

    // 70 bytes in three chunks of at most 30: over the limit only once put together.
    let r = send(vec![
        r#"{"id":"o-1234567890123456789","#,
        r#""qty":2,"unit_cents":150,"#,
        r#""x":"123456789"}"#,
    ])
    .await;
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "body_too_large");
    assert_eq!(r.json()["error"]["limit"], 64);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn node_failures_are_json_without_internals() {
    let server = start(ServeConfig::default()).await;
    let addr = server.local_addr();

    let r = post_json(addr, "/checkout", r#"{"id":"o-1","qty":0,"unit_cents":1}"#).await;
    assert_eq!(r.status, 500);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "node_failed");
    assert_eq!(e["message"], "qty must be at least 1");
    assert_eq!(e["node"], "price");
    let run_id = e["run_id"].as_str().unwrap().to_owned();
    assert_eq!(run_id.len(), 32);
    // The failed run is recorded.
    let r = get(addr, &format!("/runs/{run_id}")).await;
    assert_eq!(r.json()["status"], "failed");

    let r = post_json(
        addr,
        "/checkout",
        r#"{"id":"o-1","qty":5000,"unit_cents":1}"#,
    )
    .await;
    assert_eq!(r.status, 409, "the node's chosen status");

    let r = post_json(addr, "/timeout", "5000").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["code"], "node_timeout");

    let r = post_json(addr, "/boom", "7").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["code"], "node_panicked");
    assert!(
        !String::from_utf8_lossy(&r.body).contains("secret"),
        "panic payload leaked"
    );
    // The runner survived the panic.
    assert_eq!(
        post_json(addr, "/boom", "8").await.json(),
        serde_json::json!(8)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn path_and_query_parameters_fill_the_input() {
    let server = start(ServeConfig::default()).await;
    let addr = server.local_addr();
    let r = get(addr, "/items/42?verbose=true").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), "item 42 verbose=true");
    let r = get(addr, "/items/abc").await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["path"], "id");
    let r = request(
        addr,
        "PUT",
        "/items/9",
        &[("content-type", "application/json")],
        br#"{"name":"pear"}"#,
    )
    .await;
    assert_eq!(r.json(), "9=pear");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn async_mode_returns_202_and_a_location() {
    let server = start(ServeConfig::default()).await;
    let addr = server.local_addr();
    let r = request(
        addr,
        "POST",
        "/slow",
        &[
            ("content-type", "application/json"),
            ("prefer", "respond-async"),
        ],
        b"300",
    )
    .await;
    assert_eq!(r.status, 202);
    let location = r.header("location").unwrap().to_owned();
    assert!(location.starts_with("/runs/"));
    assert_eq!(r.json()["status"], "running");

    let r = get(addr, &location).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "running");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = get(addr, &location).await;
    assert_eq!(r.json()["status"], "succeeded");
    assert_eq!(r.json()["output"], 300);

    assert_eq!(
        get(addr, "/runs/00000000000000000000000000000000")
            .await
            .status,
        404
    );
    assert_eq!(get(addr, "/runs/not-an-id").await.status, 400);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn overload_gets_503_with_retry_after() {
    let server = start(ServeConfig {
        max_in_flight: 2,
        ..ServeConfig::default()
    })
    .await;
    let addr = server.local_addr();
    for _ in 0..2 {
        let r = request(
            addr,
            "POST",
            "/slow",
            &[
                ("content-type", "application/json"),
                ("prefer", "respond-async"),
            ],
            b"400",
        )
        .await;
        assert_eq!(r.status, 202);
    }
    let r = post_json(addr, "/checkout", ORDER).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["code"], "overloaded");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(post_json(addr, "/checkout", ORDER).await.status, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn healthz_and_workflows() {
    let server = start(ServeConfig::default()).await;
    let addr = server.local_addr();
    assert_eq!(get(addr, "/healthz").await.json()["status"], "ok");
    let list = get(addr, "/workflows").await.json();
    let names: Vec<&str> = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"checkout") && names.contains(&"item"),
        "{names:?}"
    );
    // (`checkout` names the workflow: a unit struct cannot be shadowed by a `let`.)
    let entry = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "checkout")
        .unwrap();
    assert_eq!(entry["triggers"][0], "http POST /checkout");
    assert_eq!(entry["steps"].as_array().unwrap().len(), 4);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_runs() {
    let before = SLOW_DONE.load(Ordering::SeqCst);
    let server = start(ServeConfig {
        grace: Duration::from_secs(5),
        ..ServeConfig::default()
    })
    .await;
    let addr = server.local_addr();
    // One synchronous request in flight while the shutdown starts.
    let pending = tokio::spawn(async move { post_json(addr, "/slow", "500").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No new connections are accepted once shutting down.
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "still accepting after shutdown began");
    let r = pending.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), 500);
    stopping.await.unwrap().unwrap();
    assert!(SLOW_DONE.load(Ordering::SeqCst) > before);
}

#[tokio::test]
async fn shutdown_gives_up_after_the_grace_period() {
    let server = start(ServeConfig {
        grace: Duration::from_millis(300),
        ..ServeConfig::default()
    })
    .await;
    let addr = server.local_addr();
    let r = request(
        addr,
        "POST",
        "/slow",
        &[
            ("content-type", "application/json"),
            ("prefer", "respond-async"),
        ],
        b"10000",
    )
    .await;
    assert_eq!(r.status, 202);
    let started = std::time::Instant::now();
    server.shutdown().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown waited {took:?}");
}

#[tokio::test]
async fn a_run_completes_when_its_client_goes_away() {
    use tokio::io::AsyncWriteExt;
    let server = start(ServeConfig::default()).await;
    let addr = server.local_addr();
    let before = SLOW_DONE.load(Ordering::SeqCst);
    {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = "300";
        let req = format!(
            "POST /slow HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    } // the client disconnects mid-run
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        SLOW_DONE.load(Ordering::SeqCst) > before,
        "the run was abandoned with its client"
    );
    let runs = get(addr, "/runs?workflow=sleepy&limit=1").await.json();
    assert_eq!(runs["runs"][0]["status"], "succeeded", "{runs}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_a_journal_failed_and_async_runs_are_remembered_in_memory() {
    let server = Runner::new()
        .workflow(checkout)
        .workflow(sleepy)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: None,
            ..ServeConfig::default()
        })
        .await
        .unwrap();
    let addr = server.local_addr();
    let r = post_json(addr, "/checkout", r#"{"id":"o-1","qty":0,"unit_cents":1}"#).await;
    let run_id = r.json()["error"]["run_id"].as_str().unwrap().to_owned();
    let run = get(addr, &format!("/runs/{run_id}")).await.json();
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["node"], "price");
    let r = request(
        addr,
        "POST",
        "/slow",
        &[
            ("content-type", "application/json"),
            ("prefer", "respond-async"),
        ],
        b"10",
    )
    .await;
    let location = r.header("location").unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let slow = get(addr, &location).await.json();
    assert_eq!(slow["output"], 10);
    // One record shape whatever the store: the journal's, with `started_ms` kept.
    assert_eq!(slow["input"], 10);
    assert_eq!(slow["started_ms"], slow["created_ms"]);
    assert!(slow["finished_ms"].as_u64().is_some(), "{slow}");
    // A synchronous run that succeeded is not kept (its client has the output).
    let ok = post_json(addr, "/checkout", r#"{"id":"o-2","qty":1,"unit_cents":1}"#).await;
    assert_eq!(ok.status, 200);
    // The history lists what the memory store holds, newest first, with its filters.
    let page = get(addr, "/runs?limit=5").await.json();
    let runs = page["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{page}");
    assert_eq!(runs[0]["workflow"], "sleepy");
    assert_eq!(runs[1]["run_id"], run_id.as_str());
    let failed = get(addr, "/runs?status=failed").await.json();
    assert_eq!(failed["runs"].as_array().unwrap().len(), 1, "{failed}");
    // Re-driving needs recorded steps: only a durable journal has them.
    let retry = request(addr, "POST", &format!("/runs/{run_id}/retry"), &[], b"").await;
    assert_eq!(retry.status, 404);
    assert_eq!(retry.json()["error"]["code"], "journal_disabled");
    server.shutdown().await.unwrap();
}
