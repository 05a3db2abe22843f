//! Crash-resume at process level: the `durable` example under a steady load of runs is killed
//! with SIGKILL at random points, twelve times, and restarted. Afterwards every acknowledged run
//! has completed exactly once, and no completed node ran twice (the nodes' ledger proves it).
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KILLS: usize = 12;
const STEPS: [&str; 3] = ["reserve_stock", "charge_card", "ship"];

fn spawn(addr: SocketAddr, dir: &Path, incarnation: usize) -> Child {
    Command::new(support::example_binary("durable"))
        .args(["serve", "--addr", &addr.to_string(), "--journal"])
        .arg(dir.join("journal.db"))
        .env("NANOFLOW_LEDGER", dir.join("ledger.log"))
        .env("NANOFLOW_INCARNATION", incarnation.to_string())
        .env("NANOFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Sends runs as fast as they are acknowledged until `until`; records each 202's run id.
async fn load(
    addr: SocketAddr,
    until: Instant,
    next: Arc<Mutex<u64>>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
) {
    while Instant::now() < until {
        let id = {
            let mut n = next.lock().unwrap();
            *n += 1;
            format!("s-{n}")
        };
        let body = format!(r#"{{"id":"{id}"}}"#);
        let sent = tokio::time::timeout(Duration::from_millis(500), async {
            let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return None };
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let req = format!(
                "POST /shipments HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n\
                 prefer: respond-async\r\nidempotency-key: {id}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(req.as_bytes()).await.ok()?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.ok()?;
            let text = String::from_utf8_lossy(&raw).into_owned();
            if !text.starts_with("HTTP/1.1 202") {
                return None;
            }
            let json = &text[text.find("\r\n\r\n")? + 4..];
            let v: serde_json::Value = serde_json::from_str(json).ok()?;
            Some(v["run_id"].as_str()?.to_owned())
        })
        .await;
        if let Ok(Some(run_id)) = sent {
            acked.lock().unwrap().insert(id, run_id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runners_lose_nothing_and_repeat_no_completed_node() {
    let dir = std::env::temp_dir().join(format!("nanoflow-crash-{}", nanoflow::RunId::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let next = Arc::new(Mutex::new(0u64));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));

    for incarnation in 0..KILLS {
        let mut child = spawn(addr, &dir, incarnation);
        support::wait_ready(addr, &mut child).await;
        let until = Instant::now() + Duration::from_millis(150 + support::random(450));
        let loaders: Vec<_> = (0..4)
            .map(|_| tokio::spawn(load(addr, until, next.clone(), acked.clone())))
            .collect();
        for l in loaders {
            l.await.unwrap();
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    // A last incarnation resumes whatever was in flight, then stops cleanly.
    let mut child = spawn(addr, &dir, KILLS);
    support::wait_ready(addr, &mut child).await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "only {} runs were acknowledged",
        acked.len()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    for (id, run_id) in &acked {
        loop {
            let r = support::get(addr, &format!("/runs/{run_id}")).await;
            assert_eq!(
                r.status, 200,
                "acknowledged run {id} ({run_id}) is not in the journal"
            );
            let status = r.json()["status"].as_str().unwrap().to_owned();
            if status == "succeeded" {
                assert_eq!(r.json()["output"], format!("shipped {id}"));
                break;
            }
            assert_eq!(status, "running", "run {id} failed: {}", r.json());
            assert!(Instant::now() < deadline, "run {id} never finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(child.wait().unwrap().success());

    // The ledger: per shipment, the steps in order; a step appears again only right after a
    // crash interrupted it (a different incarnation), and never once a later step started.
    let ledger = std::fs::read_to_string(dir.join("ledger.log")).unwrap();
    let mut per_run: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for line in ledger.lines() {
        let mut parts = line.split(' ');
        let (inc, id, step) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let step = STEPS.iter().position(|s| *s == step).unwrap();
        per_run
            .entry(id)
            .or_default()
            .push((inc.parse().unwrap(), step));
    }
    let mut repeats = 0;
    for id in acked.keys() {
        let lines = per_run
            .get(id.as_str())
            .unwrap_or_else(|| panic!("acknowledged run {id} never ran"));
        let steps: Vec<usize> = lines.iter().map(|l| l.1).collect();
        let mut expected = 0;
        for (i, &(inc, step)) in lines.iter().enumerate() {
            if step == expected {
                expected += 1;
            } else {
                assert!(
                    i > 0 && step + 1 == expected && lines[i - 1].1 == step && lines[i - 1].0 < inc,
                    "run {id}: step `{}` ran again after it completed: {lines:?}",
                    STEPS[step]
                );
                repeats += 1;
            }
        }
        assert_eq!(expected, 3, "run {id} did not run every step: {steps:?}");
    }
    // (Each repeat above is the step a crash interrupted, re-run by the next incarnation: the
    // documented at-least-once of the node in flight.)
    eprintln!(
        "{} acknowledged runs over {KILLS} kills; {repeats} in-flight steps re-executed",
        acked.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
