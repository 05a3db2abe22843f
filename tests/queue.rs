//! Queue triggers against a real NATS server with JetStream (`NANOFLOW_NATS_URL`): a run end to
//! end, duplicates, dead letters, poison runs, publishing from code and over HTTP, and a runner
//! without NATS.
#![allow(missing_docs)]

#[path = "support/services.rs"]
mod services;
#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt as _;
use nanoflow::prelude::*;
use nanoflow::{ServeConfig, Server};
use serde::{Deserialize, Serialize};
use serde_json::json;
use support::{get, post_json, request};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub qty: u32,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Priced {
    pub id: String,
    pub cents: u64,
}

#[node]
fn validate(o: Order) -> Result<Order, NodeError> {
    if o.qty == 0 {
        return Err(NodeError::permanent("qty must be at least 1"));
    }
    Ok(o)
}
#[node]
fn price(o: Order) -> Priced {
    Priced {
        id: o.id,
        cents: u64::from(o.qty) * 250,
    }
}
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
#[node]
fn record(p: Priced) -> String {
    SEEN.lock().unwrap().push(p.id.clone());
    format!("{} costs {}", p.id, p.cents)
}

static DUP_CALLS: AtomicU32 = AtomicU32::new(0);
#[node]
fn count_dup(o: Order) -> String {
    DUP_CALLS.fetch_add(1, Ordering::SeqCst);
    o.id
}

static IN_FLIGHT_FIRST: AtomicU32 = AtomicU32::new(0);
static IN_FLIGHT_SECOND: AtomicU32 = AtomicU32::new(0);
/// Slow enough for a copy of its message to arrive before its record is durable.
#[node]
async fn slow_first(o: Order) -> Order {
    IN_FLIGHT_FIRST.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    o
}
#[node]
fn after_slow(o: Order) -> String {
    IN_FLIGHT_SECOND.fetch_add(1, Ordering::SeqCst);
    o.id
}

static LAST_STARTED: AtomicU32 = AtomicU32::new(0);
/// Still running when the runner is told to stop.
#[node]
async fn slow_last(o: Order) -> String {
    LAST_STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    o.id
}

static POISON_CALLS: AtomicU32 = AtomicU32::new(0);
#[node(retries = 2, backoff = "5ms")]
fn always_down(o: Order) -> Result<String, NodeError> {
    POISON_CALLS.fetch_add(1, Ordering::SeqCst);
    if o.id.starts_with("poison") {
        return Err(NodeError::retryable("the warehouse is down"));
    }
    Ok(o.id)
}

#[node]
fn dead_letter_target(o: Order) -> String {
    o.id
}

/// Publishes from inside a node, with an id so that a node that runs again publishes once.
#[node]
async fn forward(o: Order) -> Result<u64, NodeError> {
    let stored =
        nanoflow::publish_with_id("test.queue.forwarded", &format!("fwd-{}", o.id), &o).await?;
    Ok(stored.sequence)
}
static FORWARDED: Mutex<Vec<String>> = Mutex::new(Vec::new());
#[node]
fn receive(o: Order) -> String {
    FORWARDED.lock().unwrap().push(o.id.clone());
    o.id
}

workflow! {
    /// A queue-triggered 3-node workflow.
    #[trigger(queue = "test.queue.e2e")]
    queue_e2e: validate -> price -> record;

    #[trigger(queue = "test.queue.dup")]
    queue_dup: count_dup;

    #[trigger(queue = "test.queue.inflight")]
    queue_inflight: slow_first -> after_slow;

    #[trigger(queue = "test.queue.poison")]
    queue_poison: always_down;

    #[trigger(queue = "test.queue.last")]
    queue_last: slow_last;

    #[trigger(queue = "test.queue.bad")]
    queue_bad: dead_letter_target;

    #[trigger(queue = "test.queue.forward")]
    queue_forward: forward;

    #[trigger(queue = "test.queue.forwarded")]
    queue_forwarded: receive;
}

fn temp_journal() -> PathBuf {
    std::env::temp_dir()
        .join(format!("nanoflow-queue-{}", nanoflow::RunId::new()))
        .join("journal.db")
}

async fn start(runner: Runner, nats: Option<&str>, journal: Option<PathBuf>) -> Server {
    runner
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal,
            nats_url: nats.map(str::to_owned),
            ..ServeConfig::default()
        })
        .await
        .expect("server starts")
}

/// The runs of `workflow` in the runner's journal, newest first.
async fn runs(server: &Server, workflow: &str) -> Vec<serde_json::Value> {
    let r = get(
        server.local_addr(),
        &format!("/runs?workflow={workflow}&limit=1000"),
    )
    .await;
    assert_eq!(r.status, 200);
    r.json()["runs"].as_array().unwrap().clone()
}

async fn finished_runs(server: &Server, workflow: &str, n: usize) -> Vec<serde_json::Value> {
    services::eventually(
        20,
        &format!("{n} finished runs of `{workflow}`"),
        || async {
            let all = runs(server, workflow).await;
            let done = all.iter().filter(|r| r["status"] != "running").count();
            (all.len() >= n && done == all.len()).then_some(all)
        },
    )
    .await
}

/// Waits until the workflow's consumer exists (the trigger is consuming).
async fn consuming(js: &jetstream::Context, stream: &str, workflow: &str) {
    services::eventually(20, &format!("the consumer of `{workflow}`"), || async {
        let stream = js.get_stream(stream).await.ok()?;
        stream
            .consumer_info(format!("nanoflow_{workflow}"))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_runs_the_workflow_end_to_end() {
    let Some(url) = services::nats() else { return };
    let js = services::jetstream(&url).await;
    services::reset_streams(&js, &["NANOFLOW_test_queue_e2e"]).await;
    let server = start(
        Runner::new().workflow(queue_e2e),
        Some(&url),
        Some(temp_journal()),
    )
    .await;
    consuming(&js, "NANOFLOW_test_queue_e2e", "queue_e2e").await;

    // Over the runner's HTTP API...
    let r = post_json(
        server.local_addr(),
        "/queues/test.queue.e2e",
        r#"{"id":"q-1","qty":2}"#,
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["stream"], "NANOFLOW_test_queue_e2e");
    // ... from code, as a node would ...
    let published = nanoflow::publish(
        "test.queue.e2e",
        &Order {
            id: "q-2".into(),
            qty: 3,
        },
    )
    .await
    .unwrap();
    assert_eq!(published.stream, "NANOFLOW_test_queue_e2e");
    assert!(!published.duplicate);
    // ... and by any NATS client.
    js.publish("test.queue.e2e", r#"{"id":"q-3","qty":1}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();

    let all = finished_runs(&server, "queue_e2e", 3).await;
    let mut outputs: Vec<String> = all
        .iter()
        .map(|r| r["output"].as_str().unwrap().to_owned())
        .collect();
    outputs.sort();
    assert_eq!(outputs, ["q-1 costs 500", "q-2 costs 750", "q-3 costs 250"]);
    for run in &all {
        assert_eq!(run["status"], "succeeded");
        // `nanoflow::publish` gives every message an id; other publishers may not.
        let key = run["idempotency_key"].as_str().unwrap();
        assert!(
            key.starts_with("nats:NANOFLOW_test_queue_e2e@")
                || key.starts_with("nats-msg-id:nanoflow-"),
            "{run}"
        );
    }
    // Every message was acknowledged.
    let stream = js.get_stream("NANOFLOW_test_queue_e2e").await.unwrap();
    let info = services::eventually(10, "all messages acknowledged", || {
        let stream = stream.clone();
        async move {
            let info = stream.consumer_info("nanoflow_queue_e2e").await.ok()?;
            (info.num_ack_pending == 0 && info.num_pending == 0).then_some(info)
        }
    })
    .await;
    assert_eq!(info.delivered.stream_sequence, 3);
    server.shutdown().await.unwrap();
}

/// A stream of its own (`name`, `subject`) whose short duplicate window lets the server store
/// the same message id twice (the trigger itself must keep the second from starting a run),
/// and `runner` journaled and consuming it for `workflow`.
async fn serving_duplicates(
    url: &str,
    js: &jetstream::Context,
    (name, subject): (&str, &str),
    runner: Runner,
    workflow: &str,
) -> Server {
    services::reset_streams(js, &[name]).await;
    js.create_stream(jetstream::stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        duplicate_window: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let server = start(runner, Some(url), Some(temp_journal())).await;
    consuming(js, name, workflow).await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_message_starts_one_run() {
    let Some(url) = services::nats() else { return };
    let js = services::jetstream(&url).await;
    let server = serving_duplicates(
        &url,
        &js,
        ("TEST_QUEUE_DUP", "test.queue.dup"),
        Runner::new().workflow(queue_dup),
        "queue_dup",
    )
    .await;

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "order-7");
    let first = js
        .publish_with_headers(
            "test.queue.dup",
            headers.clone(),
            r#"{"id":"d-1","qty":1}"#.into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = js
        .publish_with_headers("test.queue.dup", headers, r#"{"id":"d-1","qty":1}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        !second.duplicate && second.sequence == first.sequence + 1,
        "the server stored the message twice"
    );
    // And once more through the runner, within the window: the server drops that one itself.
    let r = request(
        server.local_addr(),
        "POST",
        "/queues/test.queue.dup",
        &[
            ("content-type", "application/json"),
            ("nats-msg-id", "order-8"),
        ],
        br#"{"id":"d-2","qty":1}"#,
    )
    .await;
    assert_eq!(r.status, 202);
    let r = request(
        server.local_addr(),
        "POST",
        "/queues/test.queue.dup",
        &[
            ("content-type", "application/json"),
            ("nats-msg-id", "order-8"),
        ],
        br#"{"id":"d-2","qty":1}"#,
    )
    .await;
    assert_eq!(r.json()["duplicate"], true);

    // Both copies of `order-7` were delivered and acknowledged ...
    let stream = js.get_stream("TEST_QUEUE_DUP").await.unwrap();
    services::eventually(10, "all three messages acknowledged", || {
        let stream = stream.clone();
        async move {
            let info = stream.consumer_info("nanoflow_queue_dup").await.ok()?;
            (info.delivered.stream_sequence == 3 && info.num_ack_pending == 0).then_some(())
        }
    })
    .await;
    // ... and started one run.
    let all = finished_runs(&server, "queue_dup", 2).await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(DUP_CALLS.load(Ordering::SeqCst), 2);
    let mut keys: Vec<&str> = all
        .iter()
        .map(|r| r["idempotency_key"].as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, ["nats-msg-id:order-7", "nats-msg-id:order-8"]);
    server.shutdown().await.unwrap();
}

/// A copy of a message delivered while the first copy's run is in flight, before its first
/// record is durable: its key is claimed with the run's first record, so the copy runs the
/// first node too (at-least-once, like a node in flight at a crash), but its claim finds the
/// key taken and nothing of it is recorded. One run, the nodes after the first run once, and
/// both copies are acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivered_while_the_first_copy_runs_starts_one_run() {
    let Some(url) = services::nats() else { return };
    let js = services::jetstream(&url).await;
    let server = serving_duplicates(
        &url,
        &js,
        ("TEST_QUEUE_INFLIGHT", "test.queue.inflight"),
        Runner::new().workflow(queue_inflight),
        "queue_inflight",
    )
    .await;

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "order-in-flight");
    let body = r#"{"id":"f-1","qty":1}"#;
    let first = js
        .publish_with_headers("test.queue.inflight", headers.clone(), body.into())
        .await
        .unwrap()
        .await
        .unwrap();
    // Past the stream's duplicate window, within the first node's 700 ms.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let second = js
        .publish_with_headers("test.queue.inflight", headers, body.into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        !second.duplicate && second.sequence == first.sequence + 1,
        "the server stored the message twice"
    );

    let stream = js.get_stream("TEST_QUEUE_INFLIGHT").await.unwrap();
    services::eventually(10, "both copies acknowledged", || {
        let stream = stream.clone();
        async move {
            let info = stream.consumer_info("nanoflow_queue_inflight").await.ok()?;
            (info.delivered.stream_sequence == 2 && info.num_ack_pending == 0).then_some(())
        }
    })
    .await;
    let all = finished_runs(&server, "queue_inflight", 1).await;
    assert_eq!(all.len(), 1, "one run for both copies: {all:?}");
    assert_eq!(all[0]["status"], "succeeded");
    assert_eq!(all[0]["idempotency_key"], "nats-msg-id:order-in-flight");
    assert_eq!(
        IN_FLIGHT_SECOND.load(Ordering::SeqCst),
        1,
        "the duplicate stopped at its first record"
    );
    assert_eq!(
        IN_FLIGHT_FIRST.load(Ordering::SeqCst),
        2,
        "the copy ran the first node before its claim was refused"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_payload_is_dead_lettered_and_the_consumer_goes_on() {
    let Some(url) = services::nats() else { return };
    let js = services::jetstream(&url).await;
    services::reset_streams(&js, &["NANOFLOW_test_queue_bad"]).await;
    let server = start(
        Runner::new().workflow(queue_bad),
        Some(&url),
        Some(temp_journal()),
    )
    .await;
    consuming(&js, "NANOFLOW_test_queue_bad", "queue_bad").await;
    // The dead letters, read from their stream.
    let dlq = js.get_stream("NANOFLOW_DLQ").await.unwrap();
    let reader = dlq
        .create_consumer(jetstream::consumer::pull::Config {
            filter_subject: nanoflow::dead_letter_subject("queue_bad"),
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut letters = reader.messages().await.unwrap();

    for body in [
        &b"{not json"[..],
        br#"{"id": 5, "qty": 1}"#,
        br#"{"id":"ok-1","qty":1}"#,
    ] {
        js.publish("test.queue.bad", body.to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        let letter = tokio::time::timeout(Duration::from_secs(10), letters.next())
            .await
            .expect("a dead letter")
            .unwrap()
            .unwrap();
        let headers = letter.headers.clone().unwrap();
        let h = |name: &str| {
            headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(h("Nanoflow-Workflow"), "queue_bad");
        assert_eq!(h("Nanoflow-Subject"), "test.queue.bad");
        seen.push((
            h("Nanoflow-Error-Code"),
            h("Nanoflow-Error"),
            String::from_utf8_lossy(&letter.payload).into_owned(),
        ));
        letter.ack().await.unwrap();
    }
    seen.sort();
    assert_eq!(seen[0].0, "invalid_input");
    assert!(
        seen[0]
            .1
            .contains("invalid input for workflow `queue_bad`: at `id`: invalid type: integer `5`"),
        "{}",
        seen[0].1
    );
    assert_eq!(
        seen[0].2, r#"{"id": 5, "qty": 1}"#,
        "the payload is dead-lettered unchanged"
    );
    assert_eq!(seen[1].0, "malformed_json");
    assert!(
        seen[1].1.contains("malformed JSON at line 1 column 2"),
        "{}",
        seen[1].1
    );

    // The good message after them ran: the consumer is alive. The bad ones created no run.
    let all = finished_runs(&server, "queue_bad", 1).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["output"], "ok-1");
    let info = js
        .get_stream("NANOFLOW_test_queue_bad")
        .await
        .unwrap()
        .consumer_info("nanoflow_queue_bad")
        .await
        .unwrap();
    assert_eq!(
        info.num_ack_pending, 0,
        "every message, bad ones included, is acknowledged"
    );
    server.shutdown().await.unwrap();
}

/// A graceful shutdown lets the runs in flight finish, then sends their acknowledgements before
/// it returns: none of their messages is left to be delivered again (without a journal, that
/// would run it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_sends_the_acknowledgements_of_the_last_runs() {
    let Some(url) = services::nats() else { return };
    let js = services::jetstream(&url).await;
    services::reset_streams(&js, &["NANOFLOW_test_queue_last"]).await;
    let server = start(Runner::new().workflow(queue_last), Some(&url), None).await;
    consuming(&js, "NANOFLOW_test_queue_last", "queue_last").await;
    for i in 0..50 {
        nanoflow::publish(
            "test.queue.last",
            &json!({"id": format!("last-{i}"), "qty": 1}),
        )
        .await
        .unwrap();
    }
    services::eventually(20, "50 runs started", || async {
        (LAST_STARTED.load(Ordering::SeqCst) == 50).then_some(())
    })
    .await;
    // Every run is in its node: the shutdown waits for them, then for their acknowledgements.
    server.shutdown().await.unwrap();
    let info = js
        .get_stream("NANOFLOW_test_queue_last")
        .await
        .unwrap()
        .consumer_info("nanoflow_queue_last")
        .await
        .unwrap();
    assert_eq!(
        (info.num_ack_pending, info.num_redelivered, info.num_pending),
        (0, 0, 0),
        "every message of a run that ended is acknowledged by the time the shutdown returns"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_run_follows_the_retry_policy_then_fails_and_can_be_redriven() {
    let Some(url) = services::nats() else { return };
    let js = services::jetstream(&url).await;
    services::reset_streams(&js, &["NANOFLOW_test_queue_poison"]).await;
    let server = start(
        Runner::new().workflow(queue_poison),
        Some(&url),
        Some(temp_journal()),
    )
    .await;
    consuming(&js, "NANOFLOW_test_queue_poison", "queue_poison").await;
    nanoflow::publish("test.queue.poison", &json!({"id": "poison-1", "qty": 1}))
        .await
        .unwrap();
    nanoflow::publish("test.queue.poison", &json!({"id": "fine-1", "qty": 1}))
        .await
        .unwrap();

    let all = finished_runs(&server, "queue_poison", 2).await;
    let failed: Vec<_> = all.iter().filter(|r| r["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{all:?}");
    assert_eq!(failed[0]["error"]["node"], "always_down");
    // Three attempts (retries = 2), then the run is in the dead-letter list ...
    let id = failed[0]["run_id"].as_str().unwrap().to_owned();
    let run = get(server.local_addr(), &format!("/runs/{id}"))
        .await
        .json();
    assert_eq!(run["timeline"].as_array().unwrap().len(), 3, "{run}");
    let dead = get(
        server.local_addr(),
        "/runs?status=failed&workflow=queue_poison",
    )
    .await
    .json();
    assert_eq!(dead["runs"].as_array().unwrap().len(), 1);
    // ... and its message is settled, not redelivered forever.
    let stream = js.get_stream("NANOFLOW_test_queue_poison").await.unwrap();
    let info = stream.consumer_info("nanoflow_queue_poison").await.unwrap();
    assert_eq!((info.num_ack_pending, info.num_redelivered), (0, 0));
    assert_eq!(POISON_CALLS.load(Ordering::SeqCst), 4);
    // Re-drive: still down, so it fails again after its retries.
    let r = request(
        server.local_addr(),
        "POST",
        &format!("/runs/{id}/retry"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 202);
    services::eventually(10, "the re-driven run to fail again", || async {
        let run = get(server.local_addr(), &format!("/runs/{id}"))
            .await
            .json();
        (run["status"] == "failed").then_some(())
    })
    .await;
    assert_eq!(POISON_CALLS.load(Ordering::SeqCst), 7);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_publishes_to_another_queue_triggered_workflow() {
    let Some(url) = services::nats() else { return };
    let js = services::jetstream(&url).await;
    services::reset_streams(
        &js,
        &[
            "NANOFLOW_test_queue_forward",
            "NANOFLOW_test_queue_forwarded",
        ],
    )
    .await;
    let server = start(
        Runner::new()
            .workflow(queue_forward)
            .workflow(queue_forwarded),
        Some(&url),
        Some(temp_journal()),
    )
    .await;
    consuming(&js, "NANOFLOW_test_queue_forward", "queue_forward").await;
    consuming(&js, "NANOFLOW_test_queue_forwarded", "queue_forwarded").await;
    for id in ["f-1", "f-2"] {
        nanoflow::publish(
            "test.queue.forward",
            &Order {
                id: id.into(),
                qty: 1,
            },
        )
        .await
        .unwrap();
    }
    // The same id again, as a node that runs twice would: stored once.
    let again = nanoflow::publish_with_id(
        "test.queue.forwarded",
        "fwd-f-1",
        &Order {
            id: "f-1".into(),
            qty: 1,
        },
    )
    .await;
    finished_runs(&server, "queue_forward", 2).await;
    let received = finished_runs(&server, "queue_forwarded", 2).await;
    assert_eq!(received.len(), 2);
    let mut seen = FORWARDED.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["f-1", "f-2"]);
    // Published before or after the node's copy: either way the stream stored it once.
    again.unwrap();
    let stream = js
        .get_stream("NANOFLOW_test_queue_forwarded")
        .await
        .unwrap();
    assert_eq!(stream.cached_info().state.messages, 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_nats_queue_triggers_are_inactive_and_publishing_says_why() {
    let server = start(Runner::new().workflow(queue_e2e), None, None).await;
    let r = post_json(
        server.local_addr(),
        "/queues/test.queue.e2e",
        r#"{"id":"x","qty":1}"#,
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "queue_unavailable");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("NANOFLOW_NATS_URL"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_queue_route_refuses_bad_requests() {
    let Some(url) = services::nats() else { return };
    let server = start(Runner::new().workflow(queue_e2e), Some(&url), None).await;
    let addr = server.local_addr();
    let r = post_json(addr, "/queues/test.queue.e2e", "{oops").await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str().unwrap()),
        (400, "malformed_json")
    );
    let r = post_json(addr, "/queues/orders.*", "{}").await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str().unwrap()),
        (400, "invalid_subject")
    );
    let r = request(
        addr,
        "POST",
        "/queues/test.queue.e2e",
        &[("content-type", "text/plain")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 415);
    // Only the subjects of this runner's queue triggers (before: any subject at all).
    let r = post_json(addr, "/queues/test.queue.nobody.stores.this", "{}").await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str().unwrap()),
        (404, "unknown_subject")
    );
    // Never the server's own API: a `$` token is refused before anything else.
    for subject in [
        "$JS.API.STREAM.PURGE.NANOFLOW_DLQ",
        "$JS.API.STREAM.UPDATE.NANOFLOW_test_queue_e2e",
        "$SYS.REQ.SERVER.PING",
        "test.$x",
        "test..queue",
        "test.queue.%3E",
        "test.queue.%2A",
    ] {
        let r = post_json(addr, &format!("/queues/{subject}"), r#"{"max_msgs":1}"#).await;
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_str().unwrap()),
            (400, "invalid_subject"),
            "{subject}"
        );
    }
    // The dead-letter subjects are the runner's, not a client's.
    let r = post_json(addr, "/queues/nanoflow.dlq.queue_e2e", "{}").await;
    assert_eq!(r.status, 404);
    server.shutdown().await.unwrap();
}

/// With the admin token set, an anonymous client cannot publish: `POST /queues/{subject}`
/// sits behind the token like the rest of the operations surface.
#[tokio::test]
async fn the_queue_route_needs_the_admin_token_when_one_is_set() {
    let Some(url) = services::nats() else { return };
    let token = "queue-admin-token-0123456789";
    let server = Runner::new()
        .workflow(queue_e2e)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(temp_journal()),
            nats_url: Some(url.clone()),
            admin_token: Some(nanoflow::AdminToken::new(token).unwrap()),
            ..ServeConfig::default()
        })
        .await
        .unwrap();
    let addr = server.local_addr();
    let body = r#"{"id":"t-1","qty":1}"#;
    let r = post_json(addr, "/queues/$JS.API.STREAM.PURGE.NANOFLOW_DLQ", "{}").await;
    assert_eq!(r.status, 401);
    let r = post_json(addr, "/queues/test.queue.e2e", body).await;
    assert_eq!(r.status, 401);
    let bearer = format!("Bearer {token}");
    let r = request(
        addr,
        "POST",
        "/queues/test.queue.e2e",
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    server.shutdown().await.unwrap();
}

/// Right after start, on a NATS store where the trigger's stream does not exist yet, the first
/// publish waits for the runner to create it instead of answering `404 no_stream`; `/readyz`
/// says when the queue side is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_publish_after_start_finds_the_stream() {
    let Some(url) = services::nats() else { return };
    let js = services::jetstream(&url).await;
    for _ in 0..3 {
        services::reset_streams(&js, &["NANOFLOW_test_queue_dup"]).await;
        let server = start(
            Runner::new().workflow(queue_dup),
            Some(&url),
            Some(temp_journal()),
        )
        .await;
        let addr = server.local_addr();
        let r = post_json(addr, "/queues/test.queue.dup", r#"{"id":"first","qty":1}"#).await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        let ready = get(addr, "/readyz").await;
        assert_eq!(
            ready.status,
            200,
            "{}",
            String::from_utf8_lossy(&ready.body)
        );
        assert_eq!(ready.json()["checks"]["queue"]["ready"], true);
        server.shutdown().await.unwrap();
    }
}

/// With NATS unreachable, a publish answers `503 queue_unavailable` at once (not after the
/// client's 5 s request timeout), and `/readyz` is 503 naming the queue, while `/healthz` stays
/// 200 (the process serves).
#[tokio::test]
async fn an_unreachable_nats_is_reported_fast_and_by_readyz() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = start(
        Runner::new().workflow(queue_e2e),
        Some(&format!("nats://127.0.0.1:{port}")),
        None,
    )
    .await;
    let addr = server.local_addr();
    let started = std::time::Instant::now();
    let r = post_json(addr, "/queues/test.queue.e2e", r#"{"id":"x","qty":1}"#).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str().unwrap()),
        (503, "queue_unavailable"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let ready = get(addr, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["checks"]["queue"]["ready"], false);
    assert!(ready.json()["checks"]["queue"]["reason"]
        .as_str()
        .unwrap()
        .contains("not connected"));
    assert_eq!(get(addr, "/healthz").await.status, 200);
    server.shutdown().await.unwrap();
}
