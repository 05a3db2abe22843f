//! Crash-resume of the event triggers at process level, against real NATS and PostgreSQL: the
//! `events` example consumes orders from a queue (each chained to a shipping run) and returns
//! from a table, while it is killed with SIGKILL at random points and restarted, with more
//! messages and rows written while it is down. Afterwards every published message and every
//! inserted row has completed exactly one run, every placed order exactly one chained shipping
//! run, and no completed node ran again (the nodes' ledger proves it).
#![allow(missing_docs)]

#[path = "support/services.rs"]
mod services;
#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KILLS: usize = 6;
const ORDER_STEPS: [&str; 4] = ["reserve", "charge", "confirm", "ship"];

struct Env {
    addr: SocketAddr,
    dir: PathBuf,
    nats: String,
    database: String,
}

/// The two tests share the example's stream.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn spawn(env: &Env, incarnation: usize) -> Child {
    spawn_holding(env, incarnation, None)
}

/// `hold`: the order whose first node holds (for an hour) in this incarnation.
fn spawn_holding(env: &Env, incarnation: usize, hold: Option<&str>) -> Child {
    let mut command = Command::new(support::example_binary("events"));
    if let Some(id) = hold {
        command.env("NANOFLOW_HOLD", id);
    }
    command
        .args(["serve", "--addr", &env.addr.to_string(), "--journal"])
        .arg(env.dir.join("journal.db"))
        .env("NANOFLOW_NATS_URL", &env.nats)
        .env("NANOFLOW_DATABASE_URL", &env.database)
        .env("NANOFLOW_LEDGER", env.dir.join("ledger.log"))
        .env("NANOFLOW_INCARNATION", incarnation.to_string())
        .env("NANOFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Every run of `workflow` in the journal (paging through `GET /runs`).
async fn all_runs(addr: SocketAddr, workflow: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut before = String::new();
    loop {
        let page = support::get(
            addr,
            &format!("/runs?workflow={workflow}&limit=1000&before={before}"),
        )
        .await
        .json();
        out.extend(page["runs"].as_array().unwrap().iter().cloned());
        match page["next_before"].as_str() {
            Some(next) => before = next.to_owned(),
            None => return out,
        }
    }
}

/// Checks one key's ledger lines: `steps` in order, a step repeated only right after itself and
/// by a later incarnation (the step a crash interrupted). Returns the number of repeats.
fn check_ledger(key: &str, lines: &[(usize, usize)], steps: &[&str]) -> usize {
    let mut expected = 0;
    let mut repeats = 0;
    for (i, &(inc, step)) in lines.iter().enumerate() {
        if step == expected {
            expected += 1;
        } else {
            assert!(
                i > 0 && step + 1 == expected && lines[i - 1].1 == step && lines[i - 1].0 < inc,
                "{key}: step `{}` ran again after it completed: {lines:?}",
                steps[step]
            );
            repeats += 1;
        }
    }
    assert_eq!(
        expected,
        steps.len(),
        "{key} did not run every step: {lines:?}"
    );
    repeats
}

/// What the `events` example's shop needs, fresh: its order stream emptied, and a database of
/// its own with the `returns` table its database trigger watches (its URL and a client).
async fn shop_services(
    nats: &str,
    postgres: &str,
) -> (
    async_nats::jetstream::Context,
    String,
    tokio_postgres::Client,
) {
    let js = services::jetstream(nats).await;
    services::reset_streams(&js, &["NANOFLOW_shop_orders"]).await;
    let database = services::fresh_database(postgres).await;
    let db = services::connect_db(&database).await;
    db.batch_execute("CREATE TABLE returns (id bigint PRIMARY KEY, order_id text NOT NULL)")
        .await
        .unwrap();
    (js, database, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runners_run_every_message_row_and_chain_exactly_once() {
    let (Some(nats), Some(postgres)) = (services::nats(), services::postgres()) else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let (js, database, db) = shop_services(&nats, &postgres).await;
    let dir = std::env::temp_dir().join(format!(
        "nanoflow-triggers-crash-{}",
        nanoflow::RunId::new()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let env = Env {
        addr: TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
        dir,
        nats,
        database,
    };

    let (mut orders, mut returns) = (0u64, 0i64);
    let publish = |n: u64| {
        let js = js.clone();
        async move {
            let body = format!(r#"{{"id":"o-{n}","qty":{}}}"#, 1 + n % 3);
            js.publish("shop.orders", body.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    for incarnation in 0..KILLS {
        let mut child = spawn(&env, incarnation);
        support::wait_ready(env.addr, &mut child).await;
        if incarnation == 0 {
            // The first start creates the stream, the consumer and the database trigger.
            services::eventually(20, "the queue consumer", || async {
                js.get_stream("NANOFLOW_shop_orders")
                    .await
                    .ok()?
                    .consumer_info("nanoflow_place_order")
                    .await
                    .ok()
                    .map(|_| ())
            })
            .await;
            services::eventually(20, "the database subscription", || async {
                db.query_opt(
                    "SELECT 1 FROM nanoflow.subscriptions WHERE consumer = 'handle_return'",
                    &[],
                )
                .await
                .ok()?
                .map(|_| ())
            })
            .await;
        }
        // A steady stream of orders and returns until a random moment, then SIGKILL.
        let until = Instant::now() + Duration::from_millis(200 + support::random(500));
        while Instant::now() < until {
            for _ in 0..4 {
                orders += 1;
                publish(orders).await;
            }
            returns += 1;
            db.execute(
                "INSERT INTO returns VALUES ($1, $2)",
                &[&returns, &format!("o-{orders}")],
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Written while no runner is up.
        for _ in 0..10 {
            orders += 1;
            publish(orders).await;
            returns += 1;
            db.execute(
                "INSERT INTO returns VALUES ($1, $2)",
                &[&returns, &format!("o-{orders}")],
            )
            .await
            .unwrap();
        }
    }

    // A last incarnation resumes what was in flight and drains the rest (messages a killed
    // runner had pulled but not acknowledged come back after JetStream's ack wait).
    let mut child = spawn(&env, KILLS);
    support::wait_ready(env.addr, &mut child).await;
    let ledger_path = env.dir.join("ledger.log");
    let read_ledger = || {
        let text = std::fs::read_to_string(&ledger_path).unwrap_or_default();
        let mut per_key: HashMap<String, Vec<(usize, String)>> = HashMap::new();
        for line in text.lines() {
            let mut parts = line.split(' ');
            let (inc, key, step) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            per_key
                .entry(key.to_owned())
                .or_default()
                .push((inc.parse().unwrap(), step.to_owned()));
        }
        per_key
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ledger = read_ledger();
        let shipped = ledger
            .values()
            .filter(|l| l.iter().any(|(_, s)| s == "ship"))
            .count() as u64;
        let refunded = ledger
            .values()
            .filter(|l| l.iter().any(|(_, s)| s == "refund"))
            .count() as i64;
        if shipped == orders && refunded == returns {
            break;
        }
        assert!(Instant::now() < deadline, "only {shipped} of {orders} orders shipped and {refunded} of {returns} returns refunded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the last runs' finish records land.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The journal: one succeeded run per message, per placed order (chained) and per row.
    let placed = all_runs(env.addr, "place_order").await;
    let ids: BTreeSet<String> = placed
        .iter()
        .map(|r| r["input"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        (placed.len() as u64, ids.len() as u64),
        (orders, orders),
        "one run per published message"
    );
    assert!(
        placed.iter().all(|r| r["status"] == "succeeded"),
        "a queue run did not succeed"
    );
    let shipped = all_runs(env.addr, "ship_order").await;
    let upstreams: BTreeSet<String> = shipped
        .iter()
        .map(|r| r["idempotency_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        (shipped.len() as u64, upstreams.len() as u64),
        (orders, orders),
        "one chained run per placed order"
    );
    let placed_ids: BTreeSet<String> = placed
        .iter()
        .map(|r| format!("after:{}", r["run_id"].as_str().unwrap()))
        .collect();
    assert_eq!(upstreams, placed_ids);
    assert!(
        shipped.iter().all(|r| r["status"] == "succeeded"),
        "a chained run did not succeed"
    );
    let refunds = all_runs(env.addr, "handle_return").await;
    let rows: BTreeSet<i64> = refunds
        .iter()
        .map(|r| r["input"]["new"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        (refunds.len() as i64, rows.len() as i64),
        (returns, returns),
        "one run per inserted row"
    );
    assert!(refunds.iter().all(|r| r["status"] == "succeeded"));

    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(child.wait().unwrap().success());

    // The ledger: no completed node ran again.
    let mut repeats = 0;
    for (key, lines) in read_ledger() {
        let steps: &[&str] = if key.starts_with("return-") {
            &["refund"]
        } else {
            &ORDER_STEPS
        };
        let lines: Vec<(usize, usize)> = lines
            .iter()
            .map(|(inc, step)| (*inc, steps.iter().position(|s| s == step).unwrap()))
            .collect();
        repeats += check_ledger(&key, &lines, steps);
    }
    eprintln!("{orders} messages and {returns} rows over {KILLS} kills; {repeats} in-flight steps re-executed");
    let left: i64 = db
        .query_one("SELECT count(*) FROM nanoflow.outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the outbox is drained");
    let _ = std::fs::remove_dir_all(&env.dir);
}

/// A runner killed while a message's first node runs, before the run's first record (which
/// claims the message's key) is durable: the message was not acknowledged, so JetStream
/// delivers it again after its ack wait, and the next runner runs it once: its first node
/// again (a node in flight at a crash runs again), the others once, one recorded run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_runner_dies_before_its_first_record_runs_once() {
    let (Some(nats), Some(postgres)) = (services::nats(), services::postgres()) else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let (js, database, _db) = shop_services(&nats, &postgres).await;
    let dir =
        std::env::temp_dir().join(format!("nanoflow-triggers-hold-{}", nanoflow::RunId::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let env = Env {
        addr: TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
        dir,
        nats,
        database,
    };
    let ledger_path = env.dir.join("ledger.log");
    let ledger = || -> Vec<String> {
        std::fs::read_to_string(&ledger_path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };

    let mut child = spawn_holding(&env, 0, Some("o-hold"));
    support::wait_ready(env.addr, &mut child).await;
    services::eventually(20, "the queue consumer", || async {
        js.get_stream("NANOFLOW_shop_orders")
            .await
            .ok()?
            .consumer_info("nanoflow_place_order")
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    js.publish("shop.orders", r#"{"id":"o-hold","qty":1}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    services::eventually(20, "the first node running", || async {
        ledger()
            .iter()
            .any(|l| l == "0 o-hold reserve")
            .then_some(())
    })
    .await;
    let consumer = || async {
        js.get_stream("NANOFLOW_shop_orders")
            .await
            .unwrap()
            .consumer_info("nanoflow_place_order")
            .await
            .unwrap()
    };
    assert_eq!(
        consumer().await.num_ack_pending,
        1,
        "a message whose first record is not durable is not acknowledged"
    );
    child.kill().unwrap(); // SIGKILL, the first node holding
    child.wait().unwrap();

    let mut child = spawn(&env, 1);
    support::wait_ready(env.addr, &mut child).await;
    // JetStream's ack wait (10 s) passes before the message comes back.
    services::eventually(40, "the redelivered message shipped", || async {
        ledger()
            .iter()
            .any(|l| l.ends_with("o-hold ship"))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let placed = all_runs(env.addr, "place_order").await;
    assert_eq!(placed.len(), 1, "one run for the message: {placed:?}");
    assert_eq!(placed[0]["status"], "succeeded");
    assert_eq!(placed[0]["input"]["id"], "o-hold");
    assert_eq!(
        ledger(),
        [
            "0 o-hold reserve",
            "1 o-hold reserve",
            "1 o-hold charge",
            "1 o-hold confirm",
            "1 o-hold ship"
        ],
        "the first node again, the others once"
    );
    assert_eq!(consumer().await.num_ack_pending, 0);

    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&env.dir);
}
