//! The event triggers, against real servers, in one run:
//!
//! 1. Queue throughput: a queue-triggered 3-node workflow (journaled: each message is recorded
//!    before it is acknowledged; the journal's writes and transactions per message are read
//!    from `GET /metrics`) against a raw JetStream pull consumer that does the same work on
//!    the same messages and acknowledges each one. Both drain the same number of messages that
//!    were published beforehand. The raw consumer is timed from its first pull, the trigger from
//!    its first run's start; the runner's start (journal, NATS connection, consumer) is printed
//!    apart, with the rate that counts it. The three are measured in rounds (`BENCH_ROUNDS`, 3
//!    by default), each round all three in turn; the summary is the median of the rounds'
//!    ratios.
//! 2. Database-event latency: from an `INSERT` (autocommit) to the start of the workflow's first
//!    node, one event at a time.
//!
//! `NANOFLOW_NATS_URL=... NANOFLOW_DATABASE_URL=... cargo bench -p nanoflow --bench triggers`
//! (`source .ci/services` starts both; env `BENCH_MESSAGES`, `BENCH_ROUNDS`, `BENCH_EVENTS` to change
//! the sizes)
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt as _;
use nanoflow::prelude::*;
use nanoflow::ServeConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub customer: String,
    pub items: Vec<Item>,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub qty: u32,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quote {
    pub id: String,
    pub subtotal_cents: u64,
    pub tax_cents: u64,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Confirmation {
    pub order_id: String,
    pub total_cents: u64,
}

fn unit_price(sku: &str) -> u64 {
    match sku {
        "apple" => 120,
        "pear" => 150,
        _ => 400,
    }
}
fn check(order: &Order) -> Result<(), String> {
    if order.items.is_empty() || order.items.iter().any(|i| i.qty == 0) {
        return Err("bad order".into());
    }
    Ok(())
}
fn quote(order: &Order) -> Quote {
    let subtotal_cents: u64 = order
        .items
        .iter()
        .map(|i| u64::from(i.qty) * unit_price(&i.sku))
        .sum();
    Quote {
        id: order.id.clone(),
        subtotal_cents,
        tax_cents: subtotal_cents / 5,
    }
}
fn confirmation(q: &Quote) -> Confirmation {
    Confirmation {
        order_id: q.id.clone(),
        total_cents: q.subtotal_cents + q.tax_cents,
    }
}

static DONE: AtomicUsize = AtomicUsize::new(0);
/// When the first run of a measurement started its first node: the runner's start (opening the
/// journal, connecting to NATS, finding the consumer) is not part of the throughput, as the
/// raw consumer's connection and consumer are not.
static FIRST: Mutex<Option<Instant>> = Mutex::new(None);

#[node]
fn validate(order: Order) -> Result<Order, NodeError> {
    if DONE.load(Ordering::Relaxed) == 0 {
        FIRST.lock().unwrap().get_or_insert_with(Instant::now);
    }
    check(&order).map_err(NodeError::permanent)?;
    Ok(order)
}
#[node]
fn price(order: Order) -> Quote {
    quote(&order)
}
#[node]
fn confirm(q: Quote) -> Confirmation {
    DONE.fetch_add(1, Ordering::SeqCst);
    confirmation(&q)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ping {
    pub id: i64,
}
/// When each event's first node started.
static STARTED: OnceLock<Mutex<std::sync::mpsc::Sender<(i64, Instant)>>> = OnceLock::new();
#[node]
fn on_ping(e: DbEvent<Ping>) -> i64 {
    let at = Instant::now();
    let id = e.new.map_or(0, |p| p.id);
    if let Some(tx) = STARTED.get() {
        let _ = tx.lock().unwrap().send((id, at));
    }
    id
}

workflow! {
    #[trigger(queue = "bench.orders")]
    queued_orders: validate -> price -> confirm;

    #[trigger(postgres = "public.bench_pings", on = "insert")]
    pings: on_ping;
}

const ORDER: &str =
    r#"{"id":"o-1","customer":"ada","items":[{"sku":"apple","qty":3},{"sku":"pear","qty":1}]}"#;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn temp_journal() -> std::path::PathBuf {
    std::env::temp_dir()
        .join(format!(
            "nanoflow-bench-triggers-{}",
            nanoflow::RunId::new()
        ))
        .join("journal.db")
}

/// Publishes `n` orders to `subject`, pipelining the acknowledgements.
async fn publish(js: &jetstream::Context, subject: &'static str, n: usize) {
    let mut acks = Vec::with_capacity(1024);
    for _ in 0..n {
        acks.push(js.publish(subject, ORDER.into()).await.unwrap());
        if acks.len() == 1024 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

async fn fresh_stream(js: &jetstream::Context, name: &str, subject: &str) -> stream::Stream {
    let _ = js.delete_stream(name).await;
    js.create_stream(stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        ..Default::default()
    })
    .await
    .unwrap()
}

fn pull_config(durable: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(durable.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        max_ack_pending: 1024,
        ..Default::default()
    }
}

/// The baseline: a JetStream pull consumer doing the workflow's work inline, acknowledging each
/// message. Returns messages per second.
async fn raw(js: &jetstream::Context, n: usize) -> f64 {
    let stream = fresh_stream(js, "BENCH_RAW", "bench.raw").await;
    publish(js, "bench.raw", n).await;
    let consumer: consumer::PullConsumer =
        stream.create_consumer(pull_config("raw")).await.unwrap();
    let start = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(256)
        .messages()
        .await
        .unwrap();
    let mut seen = 0;
    while seen < n {
        let message = messages.next().await.unwrap().unwrap();
        let order: Order = serde_json::from_slice(&message.payload).unwrap();
        check(&order).unwrap();
        let out = serde_json::to_vec(&confirmation(&quote(&order))).unwrap();
        std::hint::black_box(out);
        message.ack().await.unwrap();
        seen += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// A counter of the runner's `GET /metrics` at `addr`.
fn metric(addr: SocketAddr, name: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// What [`triggered`] measured.
struct Drained {
    /// Runs per second, from the first run's start to the last run's end.
    rate: f64,
    /// Runs per second from the runner's start (as earlier rounds measured it).
    rate_with_start: f64,
    /// From the runner's start to the first run's start.
    start_up: Duration,
    /// The journal's writes and transactions per message.
    writes: f64,
    transactions: f64,
}

/// The queue trigger draining the same number of messages, with or without the journal.
async fn triggered(js: &jetstream::Context, nats: &str, n: usize, journal: bool) -> Drained {
    let stream = fresh_stream(js, "NANOFLOW_bench_orders", "bench.orders").await;
    publish(js, "bench.orders", n).await;
    // The trigger's consumer (as the runner makes it), made here so that it takes the messages
    // published before it.
    // The runner's default unless told (`BENCH_IN_FLIGHT`).
    let in_flight = env_usize("BENCH_IN_FLIGHT", ServeConfig::default().max_in_flight);
    stream
        .create_consumer(consumer::pull::Config {
            max_ack_pending: in_flight as i64,
            ..pull_config("nanoflow_queued_orders")
        })
        .await
        .unwrap();
    DONE.store(0, Ordering::SeqCst);
    *FIRST.lock().unwrap() = None;
    let start = Instant::now();
    let server = Runner::new()
        .workflow(queued_orders)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: journal.then(temp_journal),
            max_in_flight: in_flight,
            nats_url: Some(nats.into()),
            ..ServeConfig::default()
        })
        .await
        .unwrap();
    while DONE.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let end = Instant::now();
    let first = FIRST.lock().unwrap().expect("a run started");
    let rate = n as f64 / (end - first).as_secs_f64();
    let rate_with_start = n as f64 / (end - start).as_secs_f64();
    // The last runs' ends are on their way to the journal.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = server.local_addr();
    let per_message = |name| async move {
        tokio::task::spawn_blocking(move || metric(addr, name))
            .await
            .unwrap()
            / n as f64
    };
    let writes = per_message("nanoflow_journal_writes_total").await;
    let transactions = per_message("nanoflow_journal_transactions_total").await;
    server.shutdown().await.unwrap();
    Drained {
        rate,
        rate_with_start,
        start_up: first - start,
        writes,
        transactions,
    }
}

async fn db_latency(url: &str, events: usize) -> (Vec<f64>, Vec<f64>) {
    let (admin, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let name = format!("nf_bench_{}", nanoflow::RunId::new());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let host_start = url.find("://").map_or(0, |i| i + 3);
    let base = match url[host_start..].find('/') {
        Some(i) => &url[..host_start + i],
        None => url,
    };
    let database = format!("{base}/{name}");
    let (db, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    db.batch_execute("CREATE TABLE bench_pings (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = STARTED.set(Mutex::new(tx));
    let server = Runner::new()
        .workflow(pings)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(temp_journal()),
            database_url: Some(database.clone()),
            ..ServeConfig::default()
        })
        .await
        .unwrap();
    // Wait for the trigger to be installed.
    while db
        .query_opt(
            "SELECT 1 FROM nanoflow.subscriptions WHERE consumer = 'pings'",
            &[],
        )
        .await
        .ok()
        .flatten()
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let insert = db
        .prepare("INSERT INTO bench_pings VALUES ($1)")
        .await
        .unwrap();
    let (mut from_send, mut from_commit) = (Vec::with_capacity(events), Vec::with_capacity(events));
    for i in 0..(events + 20) as i64 {
        let sent = Instant::now();
        db.execute(&insert, &[&i]).await.unwrap();
        let committed = Instant::now();
        let (id, started) =
            tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(10))).unwrap();
        assert_eq!(id, i);
        if i >= 20 {
            // (the first ones warm up connections and statements)
            from_send.push(started.duration_since(sent).as_secs_f64() * 1000.0);
            from_commit.push(started.saturating_duration_since(committed).as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.shutdown().await.unwrap();
    from_send.sort_by(f64::total_cmp);
    from_commit.sort_by(f64::total_cmp);
    (from_send, from_commit)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let nats =
        std::env::var("NANOFLOW_NATS_URL").expect("set NANOFLOW_NATS_URL (`source .ci/services`)");
    let database = std::env::var("NANOFLOW_DATABASE_URL")
        .expect("set NANOFLOW_DATABASE_URL (`source .ci/services`)");
    let messages = env_usize("BENCH_MESSAGES", 50_000);
    let events = env_usize("BENCH_EVENTS", 500);
    let rounds = env_usize("BENCH_ROUNDS", 3).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(&nats).await.unwrap();
        let js = jetstream::new(client);
        println!("event-trigger benchmark: {messages} queued messages, {rounds} rounds, {events} database events, real servers on loopback");
        // Warm up both paths once, then measure in rounds: each round drains the raw consumer,
        // then the trigger without and with the journal, so that a slow spell of the machine
        // (this is a shared VM) weighs on all three; the ratios are each round's, and the
        // summary is their median.
        raw(&js, 2_000).await;
        triggered(&js, &nats, 2_000, true).await;
        let mut ratios: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut per_message = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let raw_rate = raw(&js, messages).await;
            let volatile = triggered(&js, &nats, messages, false).await;
            let durable = triggered(&js, &nats, messages, true).await;
            println!("round {round}: raw JetStream consumer (work inline, ack each)      {raw_rate:>9.0} msg/s");
            for (i, (what, d)) in [("--journal off", &volatile), ("journaled    ", &durable)]
                .into_iter()
                .enumerate()
            {
                println!(
                    "round {round}: queue trigger, 3-node workflow, {what}       {:>9.0} runs/s   ({:.1}% of raw; counting the runner's start of {:.0} ms: {:.1}%)",
                    d.rate,
                    d.rate / raw_rate * 100.0,
                    d.start_up.as_secs_f64() * 1e3,
                    d.rate_with_start / raw_rate * 100.0
                );
                ratios[i].push(d.rate / raw_rate * 100.0);
            }
            per_message.0.push(durable.writes);
            per_message.1.push(durable.transactions);
        }
        for (what, r) in ["--journal off", "journaled    "].into_iter().zip(ratios) {
            let (lowest, highest) = r
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            println!(
                "queue trigger, {what} / raw consumer: median {:.1}% over {rounds} rounds (lowest {lowest:.1}%, highest {highest:.1}%)",
                support::median(r),
            );
        }
        println!(
            "  journal per message: {:.2} writes (commits in sequence), {:.3} transactions (group commits) (medians)",
            support::median(per_message.0),
            support::median(per_message.1)
        );
        let _ = js.delete_stream("BENCH_RAW").await;
        let _ = js.delete_stream("NANOFLOW_bench_orders").await;

        let (from_send, from_commit) = db_latency(&database, events).await;
        println!(
            "database event -> first node start, from INSERT sent: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms",
            pct(&from_send, 0.5),
            pct(&from_send, 0.9),
            pct(&from_send, 0.99)
        );
        println!(
            "database event -> first node start, from COMMIT returned: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms",
            pct(&from_commit, 0.5),
            pct(&from_commit, 0.9),
            pct(&from_commit, 0.99)
        );
    });
}
