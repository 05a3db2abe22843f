//! The price of durability: a 3-node workflow behind `POST /steps`, served by one runner without
//! a journal and one with the SQLite journal (WAL, `synchronous=FULL`, group commit), under the
//! same load in one run: throughput with 32 connections, and per-run latency with one.
//!
//! `cargo bench -p nanoflow --bench durable` (env `BENCH_SECS`)
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;

use nanoflow::prelude::*;
use nanoflow::ServeConfig;

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

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    let dir = std::env::temp_dir().join(format!("nanoflow-bench-{}", nanoflow::RunId::new()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = |journal| {
        rt.block_on(async {
            Runner::new()
                .workflow(steps)
                .start(ServeConfig {
                    addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                    journal,
                    ..ServeConfig::default()
                })
                .await
                .unwrap()
        })
    };
    let memory = start(None);
    let durable = start(Some(dir.join("journal.db")));

    println!("durability benchmark: 3-node workflow over HTTP, {secs} s per measurement, loopback");
    // Group commit turns concurrency into larger batches per fsync, so throughput is measured at
    // two client counts; latency with one client.
    let mut ratios = Vec::new();
    for conns in [32, 256] {
        let mut rps = Vec::new();
        for (name, server) in [("journal off", &memory), ("journal on (SQLite)", &durable)] {
            let s = support::load(server.local_addr(), &REQUEST, conns, secs);
            let r = s.requests as f64 / s.secs;
            println!(
                "{name:<20} {conns:>3} conns: {r:>8.0} runs/s   p50 {:>6.0} us   p99 {:>6.0} us",
                s.p50_us, s.p99_us
            );
            rps.push(r);
        }
        ratios.push((conns, rps[1] / rps[0] * 100.0));
    }
    let mut p50 = Vec::new();
    for (name, server) in [("journal off", &memory), ("journal on (SQLite)", &durable)] {
        let one = support::load(server.local_addr(), &REQUEST, 1, secs);
        println!(
            "{name:<20}   1 conn : p50 {:>6.0} us   p99 {:>6.0} us per run",
            one.p50_us, one.p99_us
        );
        p50.push(one.p50_us);
    }
    for (conns, ratio) in ratios {
        println!("durable / non-durable throughput at {conns} connections: {ratio:.1}%");
    }
    println!(
        "durable p50 latency of one 3-node run: {:.2} ms",
        p50[1] / 1000.0
    );
    rt.block_on(memory.shutdown()).unwrap();
    rt.block_on(durable.shutdown()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
