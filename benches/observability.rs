//! What observability costs: the 3-node HTTP workflow of `benches/http.rs` served four ways:
//! without a subscriber, metrics off then on (what `Runner::start` in a program gets); and under
//! the log subscriber `serve` installs (writing to a sink here), with the run spans filtered
//! out and metrics off, then with spans and metrics on (what `serve` does by default). Each
//! server runs in its own process started from this one, so that a subscriber in one cannot
//! change another's callsite caches; the same in-tree load generator drives them in
//! alternating rounds, and the figures are medians of the rounds.
//!
//! `cargo bench -p nanoflow --bench observability` (env `BENCH_SECS`, `BENCH_CONNS`, `BENCH_ROUNDS`)
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

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

#[node]
fn validate(order: Order) -> Result<Order, NodeError> {
    if order.items.is_empty() || order.items.iter().any(|i| i.qty == 0) {
        return Err(NodeError::permanent("bad order").with_status(422));
    }
    Ok(order)
}
#[node]
fn price(order: Order) -> Quote {
    let subtotal_cents: u64 = order
        .items
        .iter()
        .map(|i| u64::from(i.qty) * unit_price(&i.sku))
        .sum();
    Quote {
        id: order.id,
        subtotal_cents,
        tax_cents: subtotal_cents / 5,
    }
}
#[node]
fn confirm(q: Quote) -> Confirmation {
    Confirmation {
        order_id: q.id,
        total_cents: q.subtotal_cents + q.tax_cents,
    }
}

workflow! {
    #[trigger(http = "POST /orders")]
    orders: validate -> price -> confirm;
}

const BODY: &str =
    r#"{"id":"o-1","customer":"ada","items":[{"sku":"apple","qty":3},{"sku":"pear","qty":2}]}"#;
static REQUEST: support::Request = support::Request {
    path: "/orders",
    body: BODY,
    expect: "HTTP/1.1 200",
};

/// (name, what, metrics on, log filter of the `serve`-like subscriber or none).
const MODES: [(&str, &str, bool, Option<&str>); 5] = [
    ("bare", "no metrics, no subscriber", false, None),
    ("metrics", "metrics, no subscriber", true, None),
    (
        "log",
        "serve's log (info), no spans, no metrics",
        false,
        Some("info,nanoflow_runtime::observability=off"),
    ),
    (
        "default",
        "serve's log (info), spans and metrics on",
        true,
        Some("info"),
    ),
    (
        "spans",
        "+ every run and node span recorded (debug)",
        true,
        Some("info,nanoflow_runtime::observability=debug"),
    ),
];

/// The child process: serve in `mode` on a free port, print it, and serve until killed.
fn serve(mode: &str) {
    let (_, _, metrics, filter) = MODES.iter().find(|m| m.0 == mode).copied().unwrap();
    if let Some(filter) = filter {
        // What `serve` installs (a fmt layer under NANOFLOW_LOG), writing to a sink.
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::Layer as _;
        let log = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(tracing_subscriber::EnvFilter::new(filter));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(log)).unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = Runner::new()
            .workflow(orders)
            .start(ServeConfig {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                journal: None,
                metrics,
                ..ServeConfig::default()
            })
            .await
            .unwrap();
        println!("{}", server.local_addr());
        std::future::pending::<()>().await;
    });
}

fn main() {
    if let Ok(mode) = std::env::var("NANOFLOW_BENCH_SERVE") {
        return serve(&mode);
    }
    let env = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let secs = env("BENCH_SECS", 4.0);
    let conns = env("BENCH_CONNS", 32.0) as usize;
    let rounds = env("BENCH_ROUNDS", 3.0) as usize;
    let exe = std::env::current_exe().unwrap();
    let mut children = Vec::new();
    let mut addrs = Vec::new();
    for (mode, ..) in MODES {
        let mut child = Command::new(&exe)
            .env("NANOFLOW_BENCH_SERVE", mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        addrs.push(line.trim().parse::<SocketAddr>().unwrap());
        children.push(child);
    }

    println!("Observability benchmark: 3-node HTTP workflow, {conns} keep-alive connections, {secs} s per round, {rounds} rounds, loopback, 2 server threads");
    // Rounds alternate between the servers so that a noisy neighbour hits them alike.
    // Throughput on a shared machine moves with the neighbours' load; the server's own CPU time
    // per request (from /proc) moves much less, so it is reported beside it.
    let mut all: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); MODES.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    for round in 1..=rounds {
        for (i, (mode, ..)) in MODES.iter().enumerate() {
            let before = cpu_seconds(children[i].id());
            let s = support::load(addrs[i], &REQUEST, conns, secs);
            let used = cpu_seconds(children[i].id()) - before;
            let rps = s.requests as f64 / s.secs;
            // The load generator's warm-up requests are served too: count them by time.
            let per_request = used / (rps * (secs + 0.5)) * 1e6;
            println!(
                "round {round} {mode:<8}: {rps:>9.0} req/s   p50 {:>6.0} us   p99 {:>6.0} us   server CPU {per_request:>5.1} us/request",
                s.p50_us, s.p99_us
            );
            all[i].push((rps, s.p50_us, s.p99_us));
            cpu[i].push(per_request);
        }
    }
    let median = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(|a, b| a.total_cmp(b));
        x[x.len() / 2]
    };
    let best = |v: &[(f64, f64, f64)]| v.iter().map(|r| r.0).fold(0.0, f64::max);
    let cpu_median = |i: usize| {
        let mut x = cpu[i].clone();
        x.sort_by(|a, b| a.total_cmp(b));
        x[x.len() / 2]
    };
    println!("median (best) of {rounds} rounds:");
    for (i, (mode, what, ..)) in MODES.iter().enumerate() {
        println!(
            "{mode:<8} {what:<46} {:>7.0} req/s ({:>6.0})  p50 {:>5.0} us  p99 {:>5.0} us  CPU {:>5.1} us/request",
            median(&all[i], |r| r.0),
            best(&all[i]),
            median(&all[i], |r| r.1),
            median(&all[i], |r| r.2),
            cpu_median(i)
        );
    }
    println!(
        "server CPU per request: metrics {:+.1}% (no subscriber); tracing + metrics {:+.1}% (serve's default log); every span recorded {:+.1}%",
        (cpu_median(1) / cpu_median(0) - 1.0) * 100.0,
        (cpu_median(3) / cpu_median(2) - 1.0) * 100.0,
        (cpu_median(4) / cpu_median(2) - 1.0) * 100.0
    );
    let ratio = |a: usize, b: usize| {
        (
            median(&all[a], |r| r.0) / median(&all[b], |r| r.0) * 100.0,
            best(&all[a]) / best(&all[b]) * 100.0,
        )
    };
    let (m, mb) = ratio(1, 0);
    let (o, ob) = ratio(3, 2);
    let (r, rb) = ratio(4, 2);
    println!("throughput, median (best rounds), against tracing and metrics off:");
    println!("  metrics on, no subscriber:                   {m:>5.1}% ({mb:.1}%)");
    println!("  tracing + metrics on, serve's default log:   {o:>5.1}% ({ob:.1}%)");
    println!("  every span recorded in the log:              {r:>5.1}% ({rb:.1}%)");
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// User + system CPU seconds of process `pid` so far (Linux `/proc/<pid>/stat`, USER_HZ = 100).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
