//! Replay and fork of recorded runs (issue 13), over the run API and from the command line:
//! a replay reproduces a run through the current code and catches a node whose output
//! changed; stubs keep side effects from running again; a fork reuses the outputs of the
//! steps before its step and runs the rest as a new run linked to the original.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nanoflow::prelude::*;
use nanoflow::{ServeConfig, Server};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use support::{get, request};

/// The price per unit: changing it is "a deploy that changed `price`".
static RATE: AtomicU64 = AtomicU64::new(10);
/// How many times `charge` (the side effect) ran.
static CHARGES: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub qty: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Priced {
    pub id: String,
    pub total: u64,
}

#[node]
fn price(o: Order) -> Priced {
    Priced {
        id: o.id,
        total: o.qty * RATE.load(Ordering::SeqCst),
    }
}

#[node]
fn charge(p: Priced) -> Priced {
    CHARGES.fetch_add(1, Ordering::SeqCst);
    p
}

#[node]
fn receipt(p: Priced) -> String {
    format!("receipt {}: {}", p.id, p.total)
}

workflow! {
    #[trigger(http = "POST /buy")]
    buy: price -> charge -> receipt;
}

fn temp_journal() -> PathBuf {
    std::env::temp_dir()
        .join(format!("nanoflow-replay-{}", nanoflow::RunId::new()))
        .join("journal.db")
}

async fn start(journal: &Path) -> Server {
    Runner::new()
        .workflow(buy)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(journal.to_path_buf()),
            ..ServeConfig::default()
        })
        .await
        .unwrap()
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> support::Response {
    request(
        addr,
        "POST",
        path,
        &[
            ("content-type", "application/json"),
            ("prefer", "respond-async"),
        ],
        body.as_bytes(),
    )
    .await
}

/// Waits for run `id` to finish and returns it.
async fn finished(addr: SocketAddr, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(addr, &format!("/runs/{id}")).await.json();
        if r["status"] != "running" {
            return r;
        }
        assert!(Instant::now() < deadline, "run {id} never finished: {r}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn buy_one(addr: SocketAddr, id: &str, qty: u64) -> String {
    let r = post(addr, "/buy", &format!(r#"{{"id":"{id}","qty":{qty}}}"#)).await;
    assert_eq!(r.status, 202);
    let run_id = r.json()["run_id"].as_str().unwrap().to_owned();
    let done = finished(addr, &run_id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    run_id
}

fn verdicts(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

async fn cli(journal: &Path, args: &[&str]) -> Result<(), nanoflow::Error> {
    let mut argv = vec!["shop"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--journal", journal.to_str().unwrap()]);
    Runner::new().workflow(buy).run_cli(argv).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_catch_changed_outputs_and_forks_reuse_the_steps_before() {
    let journal = temp_journal();
    let server = start(&journal).await;
    let addr = server.local_addr();
    let run_id = buy_one(addr, "o1", 2).await;
    assert_eq!(CHARGES.load(Ordering::SeqCst), 1);

    // Same code: every step reproduces. `charge` runs again, unless stubbed.
    let replay = |q: &'static str| {
        let path = format!("/runs/{run_id}/replay{q}");
        async move {
            let r = request(addr, "POST", &path, &[], b"").await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            r.json()
        }
    };
    let report = replay("").await;
    assert_eq!(report["reproduces"], true, "{report}");
    assert_eq!(
        verdicts(&report),
        pairs(&[("price", "same"), ("charge", "same"), ("receipt", "same")])
    );
    assert_eq!(CHARGES.load(Ordering::SeqCst), 2);
    let report = replay("?stub=charge").await;
    assert_eq!(report["reproduces"], true, "{report}");
    assert_eq!(
        verdicts(&report),
        pairs(&[
            ("price", "same"),
            ("charge", "stubbed"),
            ("receipt", "same")
        ])
    );
    assert_eq!(
        CHARGES.load(Ordering::SeqCst),
        2,
        "a stubbed node does not run"
    );
    // Nothing was journaled by the replays.
    let listed = get(addr, "/runs?workflow=buy").await.json();
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1, "{listed}");

    // `price` changed: the replay says where, and what.
    RATE.store(11, Ordering::SeqCst);
    let report = replay("?stub=charge").await;
    assert_eq!(report["reproduces"], false, "{report}");
    assert_eq!(
        verdicts(&report),
        pairs(&[
            ("price", "differs"),
            ("charge", "stubbed"),
            ("receipt", "same")
        ]),
        "a stubbed step passes on its recorded output: {report}"
    );
    let price = &report["steps"][0];
    assert_eq!(price["diff"][0]["path"], "total");
    assert_eq!(
        (&price["diff"][0]["recorded"], &price["diff"][0]["replayed"]),
        (&Value::from(20), &Value::from(22))
    );
    let report = replay("").await;
    assert_eq!(
        verdicts(&report),
        pairs(&[
            ("price", "differs"),
            ("charge", "differs"),
            ("receipt", "differs")
        ])
    );
    let r = request(
        addr,
        "POST",
        &format!("/runs/{run_id}/replay?stub=nope"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_stub");

    // Fork from `charge`: `price`'s recorded output (20) is reused, the rest runs again.
    let charges = CHARGES.load(Ordering::SeqCst);
    let r = request(
        addr,
        "POST",
        &format!("/runs/{run_id}/fork?from=charge"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-forked-from"), Some(run_id.as_str()));
    let forked = r.json()["run_id"].as_str().unwrap().to_owned();
    assert_ne!(forked, run_id);
    let done = finished(addr, &forked).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "receipt o1: 20");
    assert_eq!(done["forked_from"], run_id.as_str());
    assert_eq!(CHARGES.load(Ordering::SeqCst), charges + 1);
    // From the first step, everything runs on the current code.
    let r = request(
        addr,
        "POST",
        &format!("/runs/{run_id}/fork?from=price"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 202);
    let again = r.json()["run_id"].as_str().unwrap().to_owned();
    assert_eq!(finished(addr, &again).await["output"], "receipt o1: 22");
    let r = request(
        addr,
        "POST",
        &format!("/runs/{run_id}/fork?from=nope"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_step");
    server.shutdown().await.unwrap();

    // The command line: exit 1 (an error) while `price` differs, 0 once it reproduces.
    let err = cli(&journal, &["runs", "replay", &run_id, "--stub", "charge"])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not reproduce") && err.contains("1 step"),
        "{err}"
    );
    RATE.store(10, Ordering::SeqCst);
    cli(&journal, &["runs", "replay", &run_id, "--stub", "charge"])
        .await
        .unwrap();
    let err = cli(&journal, &["runs", "replay", &run_id, "--stub", "nope"])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no step `nope`"), "{err}");
    let charges = CHARGES.load(Ordering::SeqCst);
    cli(&journal, &["runs", "fork", &run_id, "--from", "receipt"])
        .await
        .unwrap();
    assert_eq!(
        CHARGES.load(Ordering::SeqCst),
        charges,
        "a fork from `receipt` reuses `charge`"
    );
    let _ = std::fs::remove_dir_all(journal.parent().unwrap());
}
