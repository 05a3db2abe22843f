//! Scale-out (issue 12): the durable 3-node workflow of `benches/durable.rs` behind
//! `POST /steps`, journaled in SQLite (one runner) and in PostgreSQL (one runner, then two
//! runners sharing one database, the load split between them), under the same load in one run:
//! throughput with 32 connections, p50 of one run with one connection, and PostgreSQL write
//! transactions per run (`nanoflow_journal_transactions_total`, summed over the runners).
//!
//! `cargo bench -p nanoflow --bench scale_out` (env `BENCH_SECS`; PostgreSQL at
//! `NANOFLOW_DATABASE_URL`, e.g. from `source .ci/services`).
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;

use nanoflow::prelude::*;
use nanoflow::{ServeConfig, Server};

#[node]
fn parse(x: u64) -> u64 {
    x + 1
}
#[node]
fn enrich(x: u64) -> u64 {
    x * 3
}
#[node]
fn store(x: u64) -> String {
    format!("stored {x}")
}

workflow! {
    #[trigger(http = "POST /steps")]
    steps: parse -> enrich -> store;
}

static REQUEST: support::Request = support::Request {
    path: "/steps",
    body: "41",
    expect: "HTTP/1.1 200",
};

/// A counter from `GET /metrics`.
fn metric(addr: SocketAddr, name: &str) -> f64 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Runs `conns` connections split over `servers` for `secs`: runs/s, and transactions per run.
fn measure(servers: &[&Server], conns: usize, secs: f64) -> (f64, f64) {
    let tx = |s: &&Server| metric(s.local_addr(), "nanoflow_journal_transactions_total");
    let before: f64 = servers.iter().map(tx).sum();
    let stats: Vec<support::Stats> = std::thread::scope(|scope| {
        let handles: Vec<_> = servers
            .iter()
            .map(|s| {
                let addr = s.local_addr();
                let share = conns / servers.len();
                scope.spawn(move || support::load(addr, &REQUEST, share, secs))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let after: f64 = servers.iter().map(tx).sum();
    let runs: usize = stats.iter().map(|s| s.requests).sum();
    let rps: f64 = stats.iter().map(|s| s.requests as f64 / s.secs).sum();
    // The load's warm-up runs are journaled too: count them out by rate.
    let journaled = rps * (secs + 0.5);
    let _ = runs;
    (rps, (after - before) / journaled.max(1.0))
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    let Ok(server_url) = std::env::var("NANOFLOW_DATABASE_URL") else {
        println!(
            "scale-out benchmark skipped: NANOFLOW_DATABASE_URL is not set (source .ci/services)"
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("nanoflow-bench-{}", nanoflow::RunId::new()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The databases this run creates, dropped at its end.
    let made = std::cell::RefCell::new(Vec::new());
    let database = |name: &str| -> String {
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&server_url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let db = format!("nf_bench_{name}_{}", nanoflow::RunId::new());
            client
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .await
                .unwrap();
            made.borrow_mut().push(db.clone());
            let base = server_url.rsplit_once('/').unwrap().0;
            format!("{base}/{db}")
        })
    };
    let start = |journal: PathBuf| {
        rt.block_on(async {
            Runner::new()
                .workflow(steps)
                .start(ServeConfig {
                    addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                    journal: Some(journal),
                    ..ServeConfig::default()
                })
                .await
                .unwrap()
        })
    };
    let sqlite = start(dir.join("journal.db"));
    let one = start(database("one").into());
    let shared = database("two");
    let two = [start(shared.clone().into()), start(shared.into())];

    println!("scale-out benchmark: durable 3-node workflow over HTTP, {secs} s per measurement, loopback");
    let configs: [(&str, Vec<&Server>); 3] = [
        ("SQLite, 1 runner", vec![&sqlite]),
        ("PostgreSQL, 1 runner", vec![&one]),
        ("PostgreSQL, 2 runners", two.iter().collect()),
    ];
    let mut rps = Vec::new();
    for (name, servers) in &configs {
        let (r, tx) = measure(servers, 32, secs);
        let p50 = support::load(servers[0].local_addr(), &REQUEST, 1, secs).p50_us;
        let tx = if name.starts_with("SQLite") {
            String::from("-")
        } else {
            format!("{tx:.2}")
        };
        println!("{name:<22} 32 conns: {r:>7.0} runs/s   1 conn: p50 {p50:>6.0} us   transactions/run {tx}");
        rps.push(r);
    }
    println!(
        "PostgreSQL / SQLite throughput: {:.2}x with 1 runner, {:.2}x with 2 runners",
        rps[1] / rps[0],
        rps[2] / rps[0]
    );
    for s in [sqlite, one] {
        rt.block_on(s.shutdown()).unwrap();
    }
    for s in two {
        rt.block_on(s.shutdown()).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let made = made.into_inner();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&server_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        for db in &made {
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .await
                .unwrap();
        }
    });
}
