//! Flow control and durable waits (issue 15), against the `flow` example with its SQLite
//! journal: a run waiting for a signal and a sleeping run survive `kill -9`, concurrency and
//! rate limits hold (measured from the nodes' own start and end times), debounce keeps the last
//! run of a burst, cancellation compensates, a workflow timeout fails the run, and every bad
//! request gets its status.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nanoflow::prelude::*;
use nanoflow::ServeConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use support::{get, post_json, request};

/// One runner of the `flow` example on a journal and a ledger of its own.
struct Flow {
    dir: PathBuf,
    addr: SocketAddr,
    child: Child,
    incarnation: usize,
}

impl Flow {
    async fn start(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("nanoflow-flow-{name}-{}", nanoflow::RunId::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let addr = support::free_addr();
        let child = spawn(addr, &dir, 1).await;
        Flow {
            dir,
            addr,
            child,
            incarnation: 1,
        }
    }

    /// `kill -9`, then a new process on the same journal.
    async fn kill_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.incarnation += 1;
        self.child = spawn(self.addr, &self.dir, self.incarnation).await;
    }

    /// The ledger's lines: `(incarnation, step, id, start_ms, end_ms)`.
    fn ledger(&self) -> Vec<(usize, String, String, u128, u128)> {
        let text = std::fs::read_to_string(self.dir.join("ledger.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (
                    f[0].parse().unwrap(),
                    f[1].to_owned(),
                    f[2].to_owned(),
                    f[3].parse().unwrap(),
                    f[4].parse().unwrap(),
                )
            })
            .collect()
    }

    fn count(&self, step: &str, id: &str) -> usize {
        self.ledger()
            .iter()
            .filter(|(_, s, i, _, _)| s == step && i == id)
            .count()
    }

    async fn post_async(&self, path: &str, body: &str) -> Value {
        let r = request(
            self.addr,
            "POST",
            path,
            &[
                ("content-type", "application/json"),
                ("prefer", "respond-async"),
            ],
            body.as_bytes(),
        )
        .await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    async fn run(&self, id: &str) -> Value {
        get(self.addr, &format!("/runs/{id}")).await.json()
    }

    /// Polls run `id` until its status is `status` (within `within`).
    async fn wait_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let run = self.run(id).await;
            if run["status"] == status {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} is not {status} after {within:?}: {run}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn signal(&self, id: &str, name: &str, body: &str) -> support::Response {
        post_json(self.addr, &format!("/runs/{id}/signals/{name}"), body).await
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn spawn(addr: SocketAddr, dir: &Path, incarnation: usize) -> Child {
    let mut child = Command::new(support::example_binary("flow"))
        .args(["serve", "--addr", &addr.to_string(), "--journal"])
        .arg(dir.join("journal.db"))
        .env("NANOFLOW_LEDGER", dir.join("ledger.log"))
        .env("NANOFLOW_INCARNATION", incarnation.to_string())
        .env("NANOFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    support::wait_ready(addr, &mut child).await;
    child
}

fn run_id(v: &Value) -> String {
    v["run_id"].as_str().expect("a run id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_a_signal_survives_kill_9_and_runs_no_completed_step_again() {
    let mut flow = Flow::start("signal").await;
    // A synchronous request whose run reaches the signal is answered 202 `waiting`.
    let r = post_json(flow.addr, "/approvals", r#"{"id":"a-1","cents":1200}"#).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let reply = r.json();
    assert_eq!(reply["status"], "waiting");
    let id = run_id(&reply);
    let run = flow
        .wait_status(&id, "waiting", Duration::from_secs(5))
        .await;
    assert!(
        run["due_ms"].as_u64().is_some(),
        "a timeout makes it due: {run}"
    );

    flow.kill_and_restart().await;
    flow.wait_status(&id, "waiting", Duration::from_secs(5))
        .await;
    let delivered = flow
        .signal(&id, "approval", r#"{"approved":true,"by":"ana"}"#)
        .await;
    assert_eq!(
        delivered.status,
        202,
        "{}",
        String::from_utf8_lossy(&delivered.body)
    );
    let run = flow
        .wait_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["output"], "a-1 approved by ana");
    assert_eq!(flow.count("hold", "a-1"), 1, "{:?}", flow.ledger());
    assert_eq!(flow.count("decide", "a-1"), 1);
    // The decision ran in the second process: nothing before the wait ran there again.
    assert!(flow
        .ledger()
        .iter()
        .any(|(inc, s, _, _, _)| *inc == 2 && s == "decide"));

    // Delivered once: a second time is a conflict.
    let again = flow
        .signal(&id, "approval", r#"{"approved":false,"by":"bo"}"#)
        .await;
    assert_eq!(again.status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_run_survives_kill_9_and_wakes_at_its_due_time() {
    let mut flow = Flow::start("sleep").await;
    let accepted = flow.post_async("/later", r#"{"id":"l-1"}"#).await;
    let id = run_id(&accepted);
    let run = flow
        .wait_status(&id, "waiting", Duration::from_secs(5))
        .await;
    let created = run["created_ms"].as_u64().unwrap() as u128;
    tokio::time::sleep(Duration::from_millis(700)).await;
    flow.kill_and_restart().await;
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let run = flow
        .wait_status(&id, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(run["output"], "l-1 stamped");
    let stamped = flow
        .ledger()
        .into_iter()
        .find(|(_, s, i, _, _)| s == "stamp" && i == "l-1")
        .expect("stamped")
        .3;
    // Two seconds after the run reached the sleep, not two seconds after the restart.
    assert!(
        stamped >= created + 2000,
        "stamped {stamped}, created {created}"
    );
    assert!(
        stamped < restarted + 2000,
        "the sleep started over after the restart: stamped {stamped}, restarted {restarted}"
    );
    assert_eq!(flow.count("hold", "l-1"), 1);
    assert_eq!(flow.count("stamp", "l-1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signals_timeout_passes_none_and_later_signals_are_refused() {
    let flow = Flow::start("timeout").await;
    let r = post_json(flow.addr, "/quick-approvals", r#"{"id":"q-1"}"#).await;
    assert_eq!(r.status, 202);
    let id = run_id(&r.json());
    let run = flow
        .wait_status(&id, "succeeded", Duration::from_secs(6))
        .await;
    assert_eq!(run["output"], "q-1 expired");
    let late = flow
        .signal(&id, "approval", r#"{"approved":true,"by":"ana"}"#)
        .await;
    assert_eq!(late.status, 409);
    assert_eq!(late.json()["error"]["code"], "run_finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signals_get_their_status() {
    let flow = Flow::start("bad").await;
    let r = post_json(flow.addr, "/approvals", r#"{"id":"b-1"}"#).await;
    let id = run_id(&r.json());
    flow.wait_status(&id, "waiting", Duration::from_secs(5))
        .await;

    // A value of the wrong shape: 422 with the path.
    let wrong = flow
        .signal(&id, "approval", r#"{"approved":"yes","by":"ana"}"#)
        .await;
    assert_eq!(
        wrong.status,
        422,
        "{}",
        String::from_utf8_lossy(&wrong.body)
    );
    let body = wrong.json();
    assert_eq!(body["error"]["code"], "invalid_signal");
    assert_eq!(body["error"]["path"], "approved");
    let garbled = flow.signal(&id, "approval", "{").await;
    assert_eq!(garbled.status, 422);

    // A signal the run does not wait for: 409.
    let other = flow.signal(&id, "payment", r#"{}"#).await;
    assert_eq!(other.status, 409);
    assert_eq!(other.json()["error"]["code"], "not_waiting");

    // An unknown run: 404.
    let unknown = flow
        .signal(
            &nanoflow::RunId::new().to_string(),
            "approval",
            r#"{"approved":true,"by":"a"}"#,
        )
        .await;
    assert_eq!(unknown.status, 404);

    // The run still waits, and the right value is delivered once.
    let ok = flow
        .signal(&id, "approval", r#"{"approved":false,"by":"bo"}"#)
        .await;
    assert_eq!(ok.status, 202);
    let twice = flow
        .signal(&id, "approval", r#"{"approved":true,"by":"ana"}"#)
        .await;
    assert_eq!(twice.status, 409);
    let code = twice.json()["error"]["code"].as_str().unwrap().to_owned();
    assert!(
        code == "signal_delivered" || code == "run_finished",
        "{code}"
    );
    let run = flow
        .wait_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["output"], "b-1 rejected by bo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_two_runs_of_a_limited_workflow_run_at_once() {
    let flow = Flow::start("concurrency").await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let r = flow
            .post_async("/slow", &format!(r#"{{"id":"c-{i}"}}"#))
            .await;
        assert_eq!(r["status"], "queued");
        ids.push(run_id(&r));
    }
    for id in &ids {
        flow.wait_status(id, "succeeded", Duration::from_secs(20))
            .await;
    }
    let spans: Vec<(u128, u128)> = flow
        .ledger()
        .into_iter()
        .filter(|(_, s, _, _, _)| s == "slow")
        .map(|(_, _, _, a, b)| (a, b))
        .collect();
    assert_eq!(spans.len(), 8);
    // The most nodes running at any start.
    let most = spans
        .iter()
        .map(|(at, _)| spans.iter().filter(|(a, b)| a <= at && at < b).count())
        .max()
        .unwrap();
    assert!(most <= 2, "{most} ran at once: {spans:?}");
    assert_eq!(
        most, 2,
        "the limit is 2, and 8 runs were waiting: {spans:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_over_three_seconds_within_ten_percent() {
    let flow = Flow::start("rate").await;
    for i in 0..90 {
        flow.post_async("/ticks", &format!(r#"{{"id":"t-{i}"}}"#))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(4600)).await;
    let mut starts: Vec<u128> = flow
        .ledger()
        .into_iter()
        .filter(|(_, s, _, _, _)| s == "tick")
        .map(|(_, _, _, a, _)| a)
        .collect();
    starts.sort();
    let first = starts[0];
    let in_three_seconds = starts.iter().filter(|t| **t < first + 3000).count();
    // 20 per second: 60 in three seconds.
    assert!(
        (54..=66).contains(&in_three_seconds),
        "{in_three_seconds} runs started in 3 s at 20/s: {starts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debounce_starts_only_the_last_run_of_a_burst_per_key() {
    let flow = Flow::start("debounce").await;
    let mut burst = Vec::new();
    for i in 0..5 {
        let r = flow
            .post_async("/notify", &format!(r#"{{"id":"d-{i}","customer":"c1"}}"#))
            .await;
        burst.push(run_id(&r));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let other = run_id(
        &flow
            .post_async("/notify", r#"{"id":"e-0","customer":"c2"}"#)
            .await,
    );
    let last = flow
        .wait_status(&burst[4], "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(last["output"], "c1 notified d-4");
    flow.wait_status(&other, "succeeded", Duration::from_secs(5))
        .await;
    for id in &burst[..4] {
        let run = flow.run(id).await;
        assert_eq!(run["status"], "cancelled", "{run}");
        assert_eq!(run["error"]["code"], "debounced");
    }
    let notified: Vec<String> = flow
        .ledger()
        .into_iter()
        .filter(|(_, s, _, _, _)| s == "notify")
        .map(|(_, _, i, _, _)| i)
        .collect();
    assert_eq!(notified.len(), 2, "{notified:?}");
    assert!(notified.contains(&"d-4".to_owned()) && notified.contains(&"e-0".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_waiting_run_compensates_and_ends_it() {
    let flow = Flow::start("cancel").await;
    let id = run_id(&flow.post_async("/orders", r#"{"id":"o-1"}"#).await);
    flow.wait_status(&id, "waiting", Duration::from_secs(5))
        .await;
    let cancel = post_json(flow.addr, &format!("/runs/{id}/cancel"), "").await;
    assert_eq!(
        cancel.status,
        202,
        "{}",
        String::from_utf8_lossy(&cancel.body)
    );
    let run = flow
        .wait_status(&id, "cancelled", Duration::from_secs(5))
        .await;
    assert_eq!(run["error"]["code"], "cancelled");
    assert_eq!(flow.count("charge", "o-1"), 1);
    assert_eq!(flow.count("refund", "o-1"), 1, "{:?}", flow.ledger());
    assert_eq!(flow.count("ship", "o-1"), 0);
    // Ended: cancelling again, or signalling it, is a conflict; an unknown run is not found.
    let again = post_json(flow.addr, &format!("/runs/{id}/cancel"), "").await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["error"]["code"], "run_finished");
    let late = flow
        .signal(&id, "go", r#"{"approved":true,"by":"a"}"#)
        .await;
    assert_eq!(late.status, 409);
    let unknown = post_json(
        flow.addr,
        &format!("/runs/{}/cancel", nanoflow::RunId::new()),
        "",
    )
    .await;
    assert_eq!(unknown.status, 404);

    // A queued run leaves its queue.
    let queued: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(run_id(
                &flow
                    .post_async("/slow", &format!(r#"{{"id":"x-{i}"}}"#))
                    .await,
            ));
        }
        ids
    };
    // Two run at once for 200 ms: the fourth is still queued.
    let cancel = post_json(flow.addr, &format!("/runs/{}/cancel", queued[3]), "").await;
    assert_eq!(
        cancel.status,
        200,
        "{}",
        String::from_utf8_lossy(&cancel.body)
    );
    assert_eq!(cancel.json()["status"], "cancelled");
    flow.wait_status(&queued[2], "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(flow.run(&queued[3]).await["status"], "cancelled");
    assert_eq!(flow.count("slow", "x-3"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_workflow_timeout_fails_and_compensates() {
    let flow = Flow::start("deadline").await;
    let started = Instant::now();
    let r = post_json(flow.addr, "/hurried", r#"{"id":"h-1"}"#).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "workflow_timeout");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    let id = r.json()["error"]["run_id"].as_str().unwrap().to_owned();
    let run = flow
        .wait_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["error"]["code"], "workflow_timeout");
    assert_eq!(flow.count("refund", "h-1"), 1, "{:?}", flow.ledger());
    assert_eq!(
        flow.count("linger", "h-1"),
        0,
        "the node was stopped at the deadline"
    );
}

// `gated.signal(run_id, value)` in code reaches a run of the runner serving in this process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Go {
    pub by: String,
}

#[node]
fn begin(id: String) -> String {
    id
}

#[node]
fn finish(parts: (String, Go)) -> String {
    format!("{} by {}", parts.0, parts.1.by)
}

workflow! {
    #[trigger(http = "POST /go")]
    gated: begin -> signal(go: Go) -> finish;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_sent_in_code_reaches_the_serving_runner() {
    let dir = std::env::temp_dir().join(format!("nanoflow-flow-code-{}", nanoflow::RunId::new()));
    let server = Runner::new()
        .workflow(gated)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(dir.join("journal.db")),
            ..ServeConfig::default()
        })
        .await
        .unwrap();
    let addr = server.local_addr();
    let r = post_json(addr, "/go", r#""g-1""#).await;
    assert_eq!(r.status, 202);
    let id: nanoflow::RunId = r.json()["run_id"].as_str().unwrap().parse().unwrap();
    gated
        .signal(id, Go { by: "code".into() })
        .await
        .expect("delivered");
    let again = gated.signal(id, Go { by: "twice".into() }).await;
    assert!(again.is_err(), "a second signal is refused: {again:?}");
    let mut run = serde_json::Value::Null;
    for _ in 0..200 {
        run = get(addr, &format!("/runs/{id}")).await.json();
        if run["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(run["output"], "g-1 by code", "{run}");
    let unknown = gated
        .signal(nanoflow::RunId::new(), Go { by: "x".into() })
        .await;
    assert!(
        matches!(unknown, Err(nanoflow::SignalError::UnknownRun(_))),
        "{unknown:?}"
    );
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
