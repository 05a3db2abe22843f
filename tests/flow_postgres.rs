//! Flow control across runners (issue 15 with issue 12): two processes of the `flow` example on
//! one real PostgreSQL journal (`NANOFLOW_DATABASE_URL`, a database of its own):
//! - a concurrency limit holds across both: 8 runs sent to two runners, never more than 2 at
//!   once (measured from the nodes' own start and end times);
//! - a signal sent to the runner that did not start the run reaches it;
//! - a run sleeping on a runner killed with SIGKILL is woken by the other at its due time.
#![allow(missing_docs)]

#[path = "support/services.rs"]
mod services;
#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{get, post_json, request};

struct Runner {
    addr: SocketAddr,
    child: Child,
}

impl Runner {
    async fn start(name: &str, url: &str, dir: &Path) -> Self {
        let addr = support::free_addr();
        let mut child = Command::new(support::example_binary("flow"))
            .args(["serve", "--addr", &addr.to_string(), "--journal", url])
            .env("NANOFLOW_LEDGER", dir.join("ledger.log"))
            .env("NANOFLOW_INCARNATION", name)
            .env("NANOFLOW_RUNNER_ID", name)
            .env("NANOFLOW_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        support::wait_ready(addr, &mut child).await;
        Runner { addr, child }
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
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(runner, step, id, start_ms, end_ms)` of every node that ran.
fn ledger(dir: &Path) -> Vec<(String, String, String, u128, u128)> {
    std::fs::read_to_string(dir.join("ledger.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_owned(),
                f[1].to_owned(),
                f[2].to_owned(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            )
        })
        .collect()
}

async fn wait_status(addr: SocketAddr, id: &str, status: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let run = get(addr, &format!("/runs/{id}")).await.json();
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

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nanoflow-flow-pg-{}", nanoflow::RunId::new()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_signals_and_sleeps_hold_across_two_runners() {
    let Some(server) = services::postgres() else {
        return;
    };
    let url = services::fresh_database(&server).await;
    let dir = temp_dir();
    let a = Runner::start("a", &url, &dir).await;
    let mut b = Some(Runner::start("b", &url, &dir).await);
    let b_addr = b.as_ref().unwrap().addr;

    // A concurrency limit of 2 across both runners.
    let mut ids = Vec::new();
    for i in 0..8 {
        let runner = if i % 2 == 0 { &a } else { b.as_ref().unwrap() };
        let r = runner
            .post_async("/slow", &format!(r#"{{"id":"c-{i}"}}"#))
            .await;
        ids.push(r["run_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        wait_status(a.addr, id, "succeeded", Duration::from_secs(30)).await;
    }
    let spans: Vec<(String, u128, u128)> = ledger(&dir)
        .into_iter()
        .filter(|(_, s, _, _, _)| s == "slow")
        .map(|(r, _, _, a, b)| (r, a, b))
        .collect();
    assert_eq!(spans.len(), 8);
    let most = spans
        .iter()
        .map(|(_, at, _)| spans.iter().filter(|(_, a, b)| a <= at && at < b).count())
        .max()
        .unwrap();
    assert!(
        most <= 2,
        "{most} ran at once across the runners: {spans:?}"
    );
    // Whichever runner frees a slot starts the next queued run, whoever queued it.

    // A run started on `a`, signalled through `b`.
    let r = post_json(a.addr, "/approvals", r#"{"id":"s-1"}"#).await;
    assert_eq!(r.status, 202);
    let id = r.json()["run_id"].as_str().unwrap().to_owned();
    wait_status(b_addr, &id, "waiting", Duration::from_secs(5)).await;
    let delivered = post_json(
        b_addr,
        &format!("/runs/{id}/signals/approval"),
        r#"{"approved":true,"by":"bea"}"#,
    )
    .await;
    assert_eq!(
        delivered.status,
        202,
        "{}",
        String::from_utf8_lossy(&delivered.body)
    );
    let run = wait_status(a.addr, &id, "succeeded", Duration::from_secs(5)).await;
    assert_eq!(run["output"], "s-1 approved by bea");

    // A run sleeping on `b`, which is killed: `a` wakes it at its due time.
    let later = b
        .as_ref()
        .unwrap()
        .post_async("/later", r#"{"id":"l-1"}"#)
        .await;
    let id = later["run_id"].as_str().unwrap().to_owned();
    let run = wait_status(a.addr, &id, "waiting", Duration::from_secs(5)).await;
    let due = run["due_ms"].as_u64().unwrap() as u128;
    drop(b.take());
    let run = wait_status(a.addr, &id, "succeeded", Duration::from_secs(10)).await;
    assert_eq!(run["output"], "l-1 stamped");
    let stamped = ledger(&dir)
        .into_iter()
        .find(|(_, s, i, _, _)| s == "stamp" && i == "l-1")
        .expect("stamped");
    assert_eq!(stamped.0, "a", "the surviving runner finished it");
    assert!(
        stamped.3 >= due && stamped.3 < due + 2_000,
        "woken at {}, due at {due}",
        stamped.3
    );
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}
