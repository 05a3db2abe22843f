//! Scale-out (issue 12) with real runner processes (the `scale` example) on one real PostgreSQL
//! journal (`NANOFLOW_DATABASE_URL`, a database per test):
//! - three runners, 300 async runs sent across them, one killed with SIGKILL mid-load: every
//!   acknowledged run finishes, every step is recorded once and re-executed only if it was in
//!   flight at the kill, the takeover happens within the lease plus 2 s, and any runner answers
//!   for any run; one idempotency key sent to two runners gives one run;
//! - a per-second cron on three runners: each tick runs exactly once, and ticks go on after
//!   the runner that fired them is killed.
#![allow(missing_docs)]

#[path = "support/services.rs"]
mod services;
#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nanoflow::prelude::*;
use nanoflow::{ServeConfig, Server};
use serde::{Deserialize, Serialize};

const STEPS: [&str; 3] = ["reserve_stock", "charge_card", "ship"];
/// The lease of the runners under test (the default is 10 s).
const LEASE_S: u64 = 3;

/// The tests of this file share two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A runner process of the `scale` example.
struct Process {
    id: String,
    addr: SocketAddr,
    child: Child,
}

impl Process {
    fn start(id: &str, url: &str, dir: &Path) -> Self {
        let addr = support::free_addr();
        let log = std::fs::File::create(dir.join(format!("{id}.log"))).unwrap();
        let child = Command::new(support::example_binary("scale"))
            .args(["serve", "--addr", &addr.to_string(), "--journal", url])
            .args(["--lease", &format!("{LEASE_S}s")])
            .env("NANOFLOW_RUNNER_ID", id)
            .env("NANOFLOW_LEDGER", dir.join("ledger.log"))
            .env("NANOFLOW_STEP_MS", "40")
            .env("NANOFLOW_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            id: id.to_owned(),
            addr,
            child,
        }
    }

    fn kill(&mut self) -> u64 {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
        now_ms()
    }

    fn stop(mut self) {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        assert!(
            self.child.wait().unwrap().success(),
            "runner {} did not stop cleanly",
            self.id
        );
    }
}

/// A failing test leaves no runner behind.
impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nanoflow-{name}-{}", nanoflow::RunId::new()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How many runs of `workflow` the shared journal holds (only those that succeeded, with
/// `succeeded`); `None` when the database cannot be read.
async fn journal_runs(db: &tokio_postgres::Client, workflow: &str, succeeded: bool) -> Option<i64> {
    let sql = if succeeded {
        "SELECT count(*) FROM nanoflow_journal.runs WHERE workflow = $1 AND status = 'succeeded'"
    } else {
        "SELECT count(*) FROM nanoflow_journal.runs WHERE workflow = $1"
    };
    db.query_one(sql, &[&workflow])
        .await
        .ok()
        .map(|row| row.get(0))
}

/// Sends one shipment to `addr`, asynchronously; the run id of its 202.
async fn send(addr: SocketAddr, id: &str) -> Option<String> {
    send_or_why(addr, id).await.ok()
}

/// [`send`], with what happened when the answer is not a 202.
async fn send_or_why(addr: SocketAddr, id: &str) -> Result<String, String> {
    let body = format!(r#"{{"id":"{id}"}}"#);
    let id = id.to_owned();
    // `support::request` panics on a refused connection: run it on a task of its own.
    let sent = tokio::time::timeout(Duration::from_secs(5), async move {
        let r = support::request(
            addr,
            "POST",
            "/shipments",
            &[
                ("content-type", "application/json"),
                ("prefer", "respond-async"),
                ("idempotency-key", &id),
            ],
            body.as_bytes(),
        )
        .await;
        if r.status == 202 {
            Ok(r.json()["run_id"].as_str().unwrap().to_owned())
        } else {
            Err(format!(
                "answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ))
        }
    });
    // A killed runner's connections fail: the request counts as not acknowledged.
    match tokio::spawn(sent).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err("no answer within 5 s".into()),
        Err(e) => Err(format!("the request failed: {e}")),
    }
}

/// One ledger line: `runner shipment step at_ms` or `runner tick scheduled_ms at_ms`.
fn ledger(dir: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join("ledger.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').map(str::to_owned).collect())
        .collect()
}

async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = String::from_utf8(support::get(addr, "/metrics").await.body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric `{name}` in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runners_lose_no_run_when_one_is_killed_mid_load() {
    let Some(server) = services::postgres() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let url = services::fresh_database(&server).await;
    let dir = temp_dir("scale");
    let mut runners: Vec<Process> = (0..3)
        .map(|i| Process::start(&format!("r{i}"), &url, &dir))
        .collect();
    for r in &mut runners {
        support::wait_ready(r.addr, &mut r.child).await;
    }

    // One idempotency key sent to two runners at once: one run.
    let (a, b) = tokio::join!(
        send_or_why(runners[0].addr, "dup-1"),
        send_or_why(runners[1].addr, "dup-1")
    );
    // The runner that records the run answers 202 with its id; the other answers the same id
    // (202) while the run goes on, or its output (200) once it has ended, which on a loaded
    // machine can come first (`docs/durability.md`, idempotency).
    let same_run = |answer: &Result<String, String>| match answer {
        Ok(_) => true,
        Err(why) => why == r#"answered 200: "shipped dup-1""#,
    };
    assert!(
        same_run(&a) && same_run(&b),
        "one key, one run: {a:?} {b:?}"
    );
    assert!(
        a.is_ok() || b.is_ok(),
        "no 202 for the new run: {a:?} {b:?}"
    );
    if let (Ok(a), Ok(b)) = (&a, &b) {
        assert_eq!(a, b, "one key, one run");
    }

    // 300 runs sent round-robin by 6 senders; runner r2 is killed after the 150th
    // acknowledgement (later sends to it fail and go to the next runner).
    let acked: Arc<Mutex<BTreeMap<String, (String, usize)>>> = Default::default();
    let next = Arc::new(Mutex::new(0usize));
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addrs: Vec<SocketAddr> = runners.iter().map(|r| r.addr).collect();
    let senders: Vec<_> = (0..6)
        .map(|_| {
            let (acked, next, killed, addrs) =
                (acked.clone(), next.clone(), killed.clone(), addrs.clone());
            tokio::spawn(async move {
                loop {
                    let n = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        *n
                    };
                    if n > 300 {
                        return;
                    }
                    let id = format!("s-{n}");
                    let mut target = n % 3;
                    loop {
                        if target == 2 && killed.load(std::sync::atomic::Ordering::SeqCst) {
                            target = 0;
                        }
                        if let Some(run_id) = send(addrs[target], &id).await {
                            acked.lock().unwrap().insert(id.clone(), (run_id, target));
                            break;
                        }
                        target = (target + 1) % 3;
                    }
                }
            })
        })
        .collect();
    services::eventually(60, "150 acknowledged runs", || {
        let n = acked.lock().unwrap().len();
        async move { (n >= 150).then_some(()) }
    })
    .await;
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    let kill_ms = runners[2].kill();
    let dead = runners.remove(2);
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        300,
        "every run was acknowledged by some runner"
    );

    // Every acknowledged run finishes; the survivors answer for the runs r2 accepted.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (id, (run_id, accepted_by)) in &acked {
        let asked = runners[usize::from(*accepted_by == 0)].addr;
        loop {
            let r = support::get(asked, &format!("/runs/{run_id}")).await;
            assert_eq!(r.status, 200, "run {id} ({run_id}) is unknown to {asked}");
            let body = r.json();
            if body["status"] == "succeeded" {
                assert_eq!(body["output"], format!("shipped {id}"));
                break;
            }
            assert_eq!(body["status"], "running", "run {id} failed: {body}");
            assert!(Instant::now() < deadline, "run {id} never finished: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The journal: each run has its three steps, each recorded once.
    let db = services::connect_db(&url).await;
    let rows = db
        .query(
            "SELECT r.idempotency_key, count(s.*) FROM nanoflow_journal.runs r
             JOIN nanoflow_journal.steps s ON s.run_id = r.id AND s.status = 'succeeded'
             WHERE r.workflow = 'shipment' GROUP BY 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 301, "one run per shipment (and dup-1 once)");
    for row in &rows {
        assert_eq!(
            row.get::<_, i64>(1),
            3,
            "run {}: steps",
            row.get::<_, String>(0)
        );
    }

    // The ledger: a step runs again only if r2 was running it at the kill, and then on a
    // survivor; the survivors resumed r2's runs within the lease plus 2 s.
    let lines = ledger(&dir);
    let mut per_run: HashMap<&str, Vec<(&str, usize, u64)>> = HashMap::new();
    for l in lines.iter().filter(|l| l[1] != "tick") {
        let step = STEPS.iter().position(|s| *s == l[2]).unwrap();
        per_run.entry(l[1].as_str()).or_default().push((
            l[0].as_str(),
            step,
            l[3].parse().unwrap(),
        ));
    }
    let (mut repeats, mut taken_over, mut worst_takeover) = (0, 0, 0u64);
    for id in acked.keys() {
        let execs = per_run
            .get(id.as_str())
            .unwrap_or_else(|| panic!("acknowledged run {id} never ran"));
        let mut done = [0usize; 3];
        for &(_, step, _) in execs {
            done[step] += 1;
        }
        assert!(done.iter().all(|&n| n >= 1), "run {id}: {execs:?}");
        for (step, &n) in done.iter().enumerate() {
            if n > 1 {
                assert_eq!(
                    n, 2,
                    "run {id}: step {} ran {n} times: {execs:?}",
                    STEPS[step]
                );
                let first = execs.iter().find(|e| e.1 == step).unwrap();
                let last_of_dead = execs.iter().filter(|e| e.0 == dead.id).map(|e| e.1).max();
                assert!(
                    first.0 == dead.id && last_of_dead == Some(step),
                    "run {id}: step {} ran twice but was not in flight on the killed runner: {execs:?}",
                    STEPS[step]
                );
                repeats += 1;
            }
        }
        let dead_ran = execs.iter().any(|e| e.0 == dead.id);
        if let Some(resumed) = execs
            .iter()
            .find(|e| e.0 != dead.id && dead_ran && e.2 > kill_ms)
        {
            taken_over += 1;
            worst_takeover = worst_takeover.max(resumed.2 - kill_ms);
        }
    }
    assert!(taken_over > 0, "no run of the killed runner was in flight");
    assert!(
        repeats <= taken_over,
        "{repeats} steps re-executed for {taken_over} runs taken over"
    );
    assert!(
        worst_takeover <= (LEASE_S + 2) * 1000,
        "a run was taken over {worst_takeover} ms after the kill (lease {LEASE_S} s)"
    );
    let takeovers = metric(runners[0].addr, "nanoflow_takeovers_total").await
        + metric(runners[1].addr, "nanoflow_takeovers_total").await;
    // Runs the killed runner accepted but had not started count as well.
    assert!(
        takeovers as usize >= taken_over,
        "{takeovers} takeovers counted in /metrics, {taken_over} seen in the ledger"
    );
    assert_eq!(
        metric(runners[0].addr, "nanoflow_shared_backlog_runs").await,
        0.0
    );
    // One view: the run list of a survivor holds the runs the dead runner accepted.
    let listed = support::get(runners[0].addr, "/runs?workflow=shipment&limit=500").await;
    let listed: HashSet<String> = listed.json()["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(acked.values().all(|(run_id, _)| listed.contains(run_id)));
    eprintln!(
        "300 runs on 3 runners, one killed: {taken_over} runs taken over, {repeats} in-flight steps \
         re-executed, worst takeover {worst_takeover} ms after the kill (lease {LEASE_S} s)"
    );
    for r in runners {
        r.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_tick_fires_once_across_runners_and_survives_its_runner() {
    let Some(server) = services::postgres() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let url = services::fresh_database(&server).await;
    let dir = temp_dir("scale-cron");
    let mut runners: Vec<Process> = (0..3)
        .map(|i| Process::start(&format!("c{i}"), &url, &dir))
        .collect();
    for r in &mut runners {
        support::wait_ready(r.addr, &mut r.child).await;
    }
    let started = now_ms();
    tokio::time::sleep(Duration::from_secs(8)).await;
    // Kill the runner that ran the latest tick.
    let last = ledger(&dir)
        .into_iter()
        .filter(|l| l[1] == "tick")
        .max_by_key(|l| l[2].parse::<u64>().unwrap())
        .expect("ticks ran");
    let victim = runners.iter().position(|r| r.id == last[0]).unwrap();
    let kill_ms = runners[victim].kill();
    let dead = runners.remove(victim);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let ended = now_ms();

    // The journal: one run per scheduled second (the key), every one finished.
    let db = services::connect_db(&url).await;
    let rows = db
        .query(
            "SELECT idempotency_key, status FROM nanoflow_journal.runs WHERE workflow = 'every_second'",
            &[],
        )
        .await
        .unwrap();
    let mut ticks: Vec<u64> = Vec::new();
    for row in &rows {
        let key: String = row.get(0);
        ticks.push(key.strip_prefix("cron:").unwrap().parse().unwrap());
    }
    ticks.sort_unstable();
    // Every second from two seconds after start to two before the end has its run, unless the
    // machine stalled every surviving runner at once (then cron skips the ticks it missed, and
    // each runner logs it).
    let (from, to) = ((started / 1000 + 2) * 1000, (ended / 1000 - 2) * 1000);
    let missing: Vec<u64> = (from..=to)
        .step_by(1000)
        .filter(|s| !ticks.contains(s))
        .collect();
    let all_stalled = runners.iter().all(|r| {
        std::fs::read_to_string(dir.join(format!("{}.log", r.id)))
            .unwrap_or_default()
            .contains("cron ticks were missed")
    });
    assert!(
        missing.is_empty() || all_stalled,
        "no run for the ticks at {missing:?}: {ticks:?}"
    );
    if !missing.is_empty() {
        eprintln!("every runner stalled and skipped the ticks at {missing:?}");
    }
    let unfinished: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, String>(1) != "succeeded")
        .map(|r| r.get::<_, String>(0))
        .collect();
    // Ticks of the last second may still be running.
    assert!(
        unfinished
            .iter()
            .all(|k| k.strip_prefix("cron:").unwrap().parse::<u64>().unwrap() + 2000 > ended),
        "unfinished ticks: {unfinished:?}"
    );

    // The ledger: each tick ran once (twice only if the killed runner was running it), and
    // ticks after the kill ran on the survivors.
    let mut runs: HashMap<u64, Vec<String>> = HashMap::new();
    for l in ledger(&dir).into_iter().filter(|l| l[1] == "tick") {
        runs.entry(l[2].parse().unwrap())
            .or_default()
            .push(l[0].clone());
    }
    for (tick, by) in &runs {
        assert!(
            by.len() == 1 || (by.len() == 2 && by[0] == dead.id),
            "tick {tick} ran on {by:?}"
        );
    }
    let after_kill = runs.iter().filter(|(t, _)| **t > kill_ms + 1000).count();
    assert!(
        after_kill >= 8,
        "only {after_kill} ticks after the kill: {runs:?}"
    );
    assert!(
        runs.iter()
            .filter(|(t, _)| **t > kill_ms + 1000)
            .all(|(_, by)| !by.contains(&dead.id)),
        "the killed runner ran ticks"
    );
    eprintln!(
        "{} ticks in {} s on 3 runners, {after_kill} after the firing runner was killed",
        ticks.len(),
        (ended - started) / 1000
    );
    for r in runners {
        r.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- in-process runners on one database ----

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Visit {
    pub customer: String,
}

#[node(state, key = customer)]
async fn count_visits(v: Visit, visits: &mut State<u64>) -> String {
    let seen = *visits.get();
    // Yield between the read and the write: two runners without a shared key lock would
    // both read the same count and lose a visit.
    tokio::time::sleep(Duration::from_millis(2)).await;
    visits.set(seen + 1);
    format!("{} visit {}", v.customer, seen + 1)
}

#[node]
async fn slow_step(n: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(400)).await;
    n + 1
}

#[node]
async fn slow_step_again(n: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(400)).await;
    n + 1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parcel {
    pub id: i64,
}

/// How many times each parcel's event ran, over both runners of the test.
static PARCELS: std::sync::Mutex<Option<HashMap<i64, u32>>> = std::sync::Mutex::new(None);

#[node]
async fn on_parcel(e: DbEvent<Parcel>) -> i64 {
    let id = e.new.unwrap().id;
    *PARCELS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(id)
        .or_default() += 1;
    id
}

/// How many times each queued order ran, over both runners of the test.
static QUEUED: std::sync::Mutex<Option<HashMap<String, u32>>> = std::sync::Mutex::new(None);

#[node]
async fn on_queued(order: Visit) -> String {
    *QUEUED
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(order.customer.clone())
        .or_default() += 1;
    order.customer
}

workflow! {
    #[trigger(http = "/visits")]
    visit_log: count_visits;

    #[trigger(queue = "scale.queue.dup")]
    scale_queue: on_queued;

    #[trigger(postgres = "public.parcels", on = "insert")]
    parcel_events: on_parcel;

    #[trigger(http = "/slow")]
    slow: slow_step -> slow_step_again;
}

async fn start(url: &str, runner_id: &str) -> Server {
    Runner::new()
        .workflow(visit_log)
        .workflow(slow)
        .workflow(parcel_events)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(PathBuf::from(url)),
            runner_id: Some(runner_id.to_owned()),
            // The same database holds the events' tables and outbox.
            database_url: Some(url.to_owned()),
            ..ServeConfig::default()
        })
        .await
        .unwrap()
}

/// Two runners share the queue's durable consumer; each message id is published twice, the
/// second time past the stream's duplicate window (so NATS delivers it again, maybe to the
/// other runner): the shared journal's key starts one run per id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_message_runs_once_across_runners() {
    let (Some(server), Some(nats)) = (services::postgres(), services::nats()) else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let url = services::fresh_database(&server).await;
    let js = services::jetstream(&nats).await;
    services::reset_streams(&js, &["SCALE_QUEUE_DUP"]).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "SCALE_QUEUE_DUP".into(),
        subjects: vec!["scale.queue.dup".into()],
        duplicate_window: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let start_with_nats = |id: &'static str| {
        let url = url.clone();
        let nats = nats.clone();
        async move {
            Runner::new()
                .workflow(scale_queue)
                .start(ServeConfig {
                    addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                    journal: Some(PathBuf::from(url)),
                    runner_id: Some(id.to_owned()),
                    nats_url: Some(nats),
                    ..ServeConfig::default()
                })
                .await
                .unwrap()
        }
    };
    let (a, b) = (start_with_nats("qa").await, start_with_nats("qb").await);
    services::eventually(20, "the shared consumer", || async {
        let stream = js.get_stream("SCALE_QUEUE_DUP").await.ok()?;
        stream
            .consumer_info("nanoflow_scale_queue")
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let db = services::connect_db(&url).await;
    for round in 0..2 {
        for i in 0..20 {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("order-{i}").as_str());
            js.publish_with_headers(
                "scale.queue.dup",
                headers,
                format!(r#"{{"customer":"q-{i}"}}"#).into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
        if round == 0 {
            // Past the duplicate window, and every first copy's run recorded: a copy that
            // comes while its original's first record is not durable yet may run that first
            // node too (docs/triggers.md), which is not what this test is about. (A fixed wait
            // alone was too short on a loaded machine: most copies ran twice.)
            tokio::time::sleep(Duration::from_millis(300)).await;
            services::eventually(30, "the first copies' runs recorded", || async {
                let recorded = journal_runs(&db, "scale_queue", false).await?;
                (recorded >= 20).then_some(())
            })
            .await;
        }
    }
    services::eventually(30, "20 queue runs", || async {
        let done = journal_runs(&db, "scale_queue", true).await?;
        (done >= 20).then_some(())
    })
    .await;
    // Both copies of every message were delivered and acknowledged by now, or soon.
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let runs = journal_runs(&db, "scale_queue", false).await;
    assert_eq!(runs, Some(20), "one run per message id");
    let ran = QUEUED.lock().unwrap().clone().unwrap_or_default();
    assert_eq!(ran.len(), 20);
    assert!(
        ran.values().all(|&n| n == 1),
        "a message ran twice: {ran:?}"
    );
    let stream = js
        .get_stream("SCALE_QUEUE_DUP")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(
        stream, 40,
        "the server stored every copy: the runners deduplicated"
    );
}

/// Two runners consume one table's events: each event starts one run, on one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_database_event_runs_once_across_runners() {
    let Some(server) = services::postgres() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let url = services::fresh_database(&server).await;
    let db = services::connect_db(&url).await;
    db.batch_execute("CREATE TABLE parcels (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    let (a, b) = (start(&url, "a").await, start(&url, "b").await);
    // Rows written before the row trigger is installed are not events.
    services::eventually(20, "the subscription", || async {
        db.query_opt(
            "SELECT 1 FROM nanoflow.subscriptions WHERE consumer = 'parcel_events'",
            &[],
        )
        .await
        .ok()?
        .map(|_| ())
    })
    .await;
    for id in 0..60i64 {
        db.execute("INSERT INTO parcels (id) VALUES ($1)", &[&id])
            .await
            .unwrap();
    }
    services::eventually(30, "60 parcel runs", || async {
        let done = journal_runs(&db, "parcel_events", true).await?;
        (done >= 60).then_some(())
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let runs = journal_runs(&db, "parcel_events", false).await;
    assert_eq!(runs, Some(60), "one run per event");
    let ran = PARCELS.lock().unwrap().clone().unwrap_or_default();
    assert_eq!(ran.len(), 60);
    assert!(ran.values().all(|&n| n == 1), "an event ran twice: {ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_keys_are_serialized_across_runners() {
    let Some(server) = services::postgres() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let url = services::fresh_database(&server).await;
    let (a, b) = (start(&url, "a").await, start(&url, "b").await);
    let addrs = [a.local_addr(), b.local_addr()];
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let addr = addrs[i % 2];
            tokio::spawn(async move {
                support::post_json(addr, "/visits", r#"{"customer":"carol"}"#).await
            })
        })
        .collect();
    let mut counts = Vec::new();
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let text: String = r.json().as_str().unwrap().to_owned();
        counts.push(text.rsplit(' ').next().unwrap().parse::<u64>().unwrap());
    }
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=40).collect::<Vec<_>>(),
        "every visit counted once across both runners"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// The database goes away while a run is between its steps: new runs get `503
/// journal_unavailable`; once the database is back, the accepted run finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_accepted_before_the_database_was_lost_finishes_when_it_returns() {
    let Some(server) = services::postgres() else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let url = services::fresh_database(&server).await;
    let db_name = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let runner = start(&url, "lonely").await;
    let addr = runner.local_addr();
    let r = support::request(
        addr,
        "POST",
        "/slow",
        &[
            ("content-type", "application/json"),
            ("prefer", "respond-async"),
        ],
        b"1",
    )
    .await;
    assert_eq!(r.status, 202);
    let run_id = r.json()["run_id"].as_str().unwrap().to_owned();

    // Lose the database: no new connections, and the runner's are cut.
    let admin = services::connect_db(&server).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {db_name} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db_name}';"
        ))
        .await
        .unwrap();
    let refused = services::eventually(10, "a 503 while the database is gone", || async {
        let r = support::post_json(addr, "/slow", "5").await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(refused.json()["error"]["code"], "journal_unavailable");
    let ready = support::get(addr, "/readyz").await;
    assert_eq!(ready.status, 503, "not ready without the journal");
    tokio::time::sleep(Duration::from_secs(1)).await;

    admin
        .batch_execute(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = support::get(addr, &format!("/runs/{run_id}")).await;
        if r.status == 200 && r.json()["status"] == "succeeded" {
            assert_eq!(r.json()["output"], 3);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish after the database returned: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And new runs are accepted again.
    let r = support::post_json(addr, "/slow", "10").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), 12);
    runner.shutdown().await.unwrap();
}
