//! A deploy under load (issue 13): the first build of the `deploy` example is killed with runs
//! in flight, and the next build, whose step `prepare` returns another shape, starts on the
//! same journal. Each unfinished run either finishes correctly or is parked as `blocked` with
//! `graph_changed` naming `prepare`; runs of the unchanged workflow finish. Blocked runs are
//! listed, counted in `/metrics`, and acted on over HTTP and from the command line. And the
//! previous graph kept with `#[finishes(..)]` finishes the runs it started.
#![allow(missing_docs)]
// The modules `v1` and `v2` stand for two builds of one crate: their items are public there.
#![allow(unreachable_pub)]

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{get, request};

fn spawn(build: &str, addr: SocketAddr, journal: &Path, slow_ms: u64) -> Child {
    Command::new(support::example_binary(build))
        .args(["serve", "--addr", &addr.to_string(), "--journal"])
        .arg(journal)
        .env("DEPLOY_SLOW_MS", slow_ms.to_string())
        .env("NANOFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Starts a run without waiting for it (202) and returns its id.
async fn start(addr: SocketAddr, path: &str, body: &str) -> String {
    let r = request(
        addr,
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
    r.json()["run_id"].as_str().unwrap().to_owned()
}

async fn run(addr: SocketAddr, id: &str) -> Value {
    let r = get(addr, &format!("/runs/{id}")).await;
    assert_eq!(
        r.status,
        200,
        "run {id}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// Waits until run `id` has recorded a success of `step`.
async fn until_recorded(addr: SocketAddr, id: &str, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = run(addr, id).await;
        let done = r["timeline"].as_array().is_some_and(|t| {
            t.iter()
                .any(|a| a["step"] == step && a["status"] == "succeeded")
        });
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "`{step}` never completed: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until run `id` is no longer running, and returns it.
async fn settled(addr: SocketAddr, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = run(addr, id).await;
        if r["status"] != "running" {
            return r;
        }
        assert!(Instant::now() < deadline, "run {id} never finished: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cli(journal: &Path, args: &[&str]) -> Output {
    Command::new(support::example_binary("deploy_v2"))
        .args(args)
        .arg("--journal")
        .arg(journal)
        .env("NANOFLOW_LOG", "error")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_that_changes_a_step_type_blocks_only_the_runs_past_it() {
    let dir = std::env::temp_dir().join(format!("nanoflow-deploys-{}", nanoflow::RunId::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let journal = dir.join("journal.db");
    let addr = support::free_addr();

    // The first build: every run stays in flight for a minute.
    let mut v1 = spawn("deploy_v1", addr, &journal, 60_000);
    support::wait_ready(addr, &mut v1).await;
    let mut past_prepare = Vec::new();
    for i in 0..3 {
        let body = format!(r#"{{"id":"a{i}","qty":{}}}"#, i + 1);
        past_prepare.push(start(addr, "/checkout", &body).await);
    }
    let mut in_prepare = Vec::new();
    for i in 0..2 {
        let body = format!(r#"{{"id":"b{i}","qty":2,"hold":true}}"#);
        in_prepare.push(start(addr, "/checkout", &body).await);
    }
    let mut audits = Vec::new();
    for i in 0..2 {
        let body = format!(r#"{{"id":"c{i}","qty":1}}"#);
        audits.push(start(addr, "/audit", &body).await);
    }
    for id in &past_prepare {
        until_recorded(addr, id, "prepare").await;
    }
    for id in &audits {
        until_recorded(addr, id, "note").await;
    }
    v1.kill().unwrap(); // SIGKILL, runs in flight
    v1.wait().unwrap();

    // The next build, on the same journal.
    let mut v2 = spawn("deploy_v2", addr, &journal, 0);
    support::wait_ready(addr, &mut v2).await;
    for id in &past_prepare {
        let r = settled(addr, id).await;
        assert_eq!(r["status"], "blocked", "{r}");
        assert_eq!(r["error"]["code"], "graph_changed", "{r}");
        assert_eq!(r["error"]["step"], "prepare", "{r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("output type of step `prepare`"),
            "{message}"
        );
        // Nothing past the changed step ran on the new build.
        let steps: Vec<&str> = r["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["step"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["prepare"], "{r}");
    }
    for (i, id) in in_prepare.iter().enumerate() {
        let r = settled(addr, id).await;
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["output"], format!("receipt b{i}: 500 EUR"));
    }
    for (i, id) in audits.iter().enumerate() {
        let r = settled(addr, id).await;
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["output"], format!("stamped c{i}"));
    }

    // Listed by status, counted in the metrics.
    let listed = get(addr, "/runs?status=blocked").await.json();
    let listed: BTreeSet<String> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, past_prepare.iter().cloned().collect());
    let metrics = String::from_utf8(get(addr, "/metrics").await.body).unwrap();
    assert!(
        metrics
            .contains("nanoflow_runs_finished_total{workflow=\"checkout\",status=\"blocked\"} 3"),
        "{metrics}"
    );

    // A plain retry still does not fit: 409, and the run stays blocked.
    let a0 = &past_prepare[0];
    let r = request(addr, "POST", &format!("/runs/{a0}/retry"), &[], b"").await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["code"], "graph_changed");
    assert_eq!(r.json()["error"]["step"], "prepare");
    assert_eq!(run(addr, a0).await["status"], "blocked");
    // From the start, it runs on the new graph.
    let r = request(
        addr,
        "POST",
        &format!("/runs/{a0}/retry?from_start=true"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let r = settled(addr, a0).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["output"], "receipt a0: 250 EUR");
    // Cancelled, it ends `cancelled`; a second cancel finds it ended.
    let a1 = &past_prepare[1];
    let r = request(addr, "POST", &format!("/runs/{a1}/cancel"), &[], b"").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = run(addr, a1).await;
    assert_eq!(
        (&r["status"], &r["error"]["code"]),
        (&"cancelled".into(), &"cancelled".into())
    );
    let r = request(addr, "POST", &format!("/runs/{a1}/cancel"), &[], b"").await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["code"], "run_finished");

    let stopped = Command::new("kill")
        .arg("-TERM")
        .arg(v2.id().to_string())
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(v2.wait().unwrap().success());

    // The same from the command line, on the last blocked run.
    let a2 = &past_prepare[2];
    let out = cli(&journal, &["runs", "list", "--status", "blocked"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(a2.as_str()) && text.contains("blocked") && text.contains("prepare"),
        "{text}"
    );
    let out = cli(&journal, &["runs", "retry", a2]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("blocked") && err.contains("--from-start"),
        "{err}"
    );
    let out = cli(&journal, &["runs", "retry", a2, "--from-start"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        "receipt a2: 750 EUR"
    );
    let out = cli(&journal, &["runs", "cancel", a2]);
    assert!(
        !out.status.success(),
        "a succeeded run is not blocked: {out:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The previous build's graph of `checkout`, as it was deployed.
mod v1 {
    use nanoflow::prelude::*;
    use serde::{Deserialize, Serialize};

    pub use super::Order;

    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct Prepared {
        pub id: String,
        pub total: u64,
    }

    #[node]
    pub fn prepare(o: Order) -> Prepared {
        Prepared {
            id: o.id,
            total: u64::from(o.qty) * 250,
        }
    }

    #[node]
    pub fn settle(p: Prepared) -> Prepared {
        p
    }

    #[node]
    pub fn receipt(p: Prepared) -> String {
        format!("receipt {}: {}", p.id, p.total)
    }

    workflow! {
        #[trigger(http = "POST /checkout")]
        pub checkout: prepare -> settle -> receipt;
    }
}

/// The current build: `prepare` returns another shape, and the previous graph is kept (its
/// nodes in module `v1`) to finish the runs started with it.
mod v2 {
    use nanoflow::prelude::*;
    use serde::{Deserialize, Serialize};

    pub use super::Order;

    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct Prepared {
        pub id: String,
        pub total_cents: u64,
        pub currency: String,
    }

    #[node]
    pub fn prepare(o: Order) -> Prepared {
        Prepared {
            id: o.id,
            total_cents: u64::from(o.qty) * 250,
            currency: "EUR".into(),
        }
    }

    #[node]
    pub fn settle(p: Prepared) -> Prepared {
        p
    }

    #[node]
    pub fn receipt(p: Prepared) -> String {
        format!("receipt {}: {} {}", p.id, p.total_cents, p.currency)
    }

    workflow! {
        #[trigger(http = "POST /checkout")]
        pub checkout: prepare -> settle -> receipt;

        /// The previous build's `checkout`, kept until the runs it started are finished.
        #[finishes(checkout)]
        pub checkout_v1: super::v1::prepare -> super::v1::settle -> super::v1::receipt;
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Order {
    pub id: String,
    pub qty: u32,
}

/// Records, as the previous build would have, a run of `checkout` that completed `prepare`
/// (without fingerprints: as a build older than them would have).
async fn recorded_by_v1(journal: &Path, id: &str, prints: bool) -> nanoflow::RunId {
    use nanoflow::journal::{Journal, NewRun, StepWrite};
    let graph = v1::checkout.graph();
    let j = Journal::open(journal).unwrap();
    let run_id = nanoflow::RunId::new();
    let input = format!(r#"{{"id":"{id}","qty":2}}"#);
    j.create_run(NewRun {
        queued: None,
        run_id,
        workflow: "checkout",
        input: input.into(),
        idempotency_key: None,
        fingerprint: Some(graph.fingerprint()).filter(|_| prints),
    })
    .await
    .unwrap();
    let output = serde_json::to_vec(&v1::Prepared {
        id: id.into(),
        total: 500,
    })
    .unwrap();
    j.store()
        .record_step(
            StepWrite {
                run_id,
                step: "prepare".into(),
                attempt: 1,
                outcome: Ok(output.into()),
                started_ms: 1,
                duration_us: 1,
                state: None,
                fingerprint: graph.fingerprints().step("prepare").filter(|_| prints),
            },
            None,
        )
        .await
        .unwrap();
    run_id
}

async fn serve(journal: &Path, keep_v1: bool) -> nanoflow::Server {
    let mut runner = Runner::new().workflow(v2::checkout);
    if keep_v1 {
        runner = runner.workflow(v2::checkout_v1);
    }
    runner
        .start(nanoflow::ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(journal.to_path_buf()),
            ..nanoflow::ServeConfig::default()
        })
        .await
        .unwrap()
}

use nanoflow::prelude::Runner;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_graph_kept_with_finishes_completes_the_runs_it_started() {
    // The kept graph is the previous one, under its name: the same fingerprint.
    assert_eq!(
        v2::checkout_v1.graph().fingerprint(),
        v1::checkout.graph().fingerprint()
    );
    assert_ne!(
        v2::checkout.graph().fingerprint(),
        v1::checkout.graph().fingerprint()
    );
    let dir = std::env::temp_dir().join(format!("nanoflow-finishes-{}", nanoflow::RunId::new()));
    let journal = dir.join("journal.db");

    // Without the kept graph, the old run is blocked at `prepare`.
    let old = recorded_by_v1(&journal, "r0", true).await;
    // A journal without fingerprints: the recorded value that no longer deserializes blocks
    // the run too, never fails it as a node error.
    let unprinted = recorded_by_v1(&journal, "u0", false).await;
    let server = serve(&journal, false).await;
    let r = settled(server.local_addr(), &old.to_string()).await;
    assert_eq!(r["status"], "blocked", "{r}");
    assert_eq!(r["error"]["step"], "prepare", "{r}");
    let r = settled(server.local_addr(), &unprinted.to_string()).await;
    assert_eq!(r["status"], "blocked", "{r}");
    assert_eq!(
        (&r["error"]["code"], &r["error"]["step"]),
        (&"graph_changed".into(), &"prepare".into()),
        "{r}"
    );
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("no longer fits"), "{message}");
    server.shutdown().await.unwrap();

    // With it, a restart finishes the old run on the old graph; a plain retry finishes the
    // blocked one the same way; new runs start on the new graph.
    let old2 = recorded_by_v1(&journal, "r1", true).await;
    let server = serve(&journal, true).await;
    let addr = server.local_addr();
    let r = settled(addr, &old2.to_string()).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["output"], "receipt r1: 500");
    let retry = request(addr, "POST", &format!("/runs/{old}/retry"), &[], b"").await;
    assert_eq!(
        retry.status,
        202,
        "{}",
        String::from_utf8_lossy(&retry.body)
    );
    let r = settled(addr, &old.to_string()).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["output"], "receipt r0: 500");
    let new = start(addr, "/checkout", r#"{"id":"n0","qty":2}"#).await;
    let r = settled(addr, &new).await;
    assert_eq!(r["output"], "receipt n0: 500 EUR", "{r}");
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
