//! The price of durability: a 3-node workflow behind `POST /steps`, served by one runner without
//! a journal and one with the SQLite journal (WAL, `synchronous=FULL`, group commit), under the
//! same load in one run: throughput with 32 connections, and per-run latency with one. The same
//! workflow with its first two nodes `#[node(pure)]` (`POST /pure-steps`) shows what declaring
//! them pure buys. The disk's own `fdatasync` is measured in the same run, and the journal's
//! transactions per run are read from `GET /metrics`.
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
#[node(pure)]
fn parse_pure(x: u64) -> u64 {
    x + 1
}
#[node(pure)]
fn enrich_pure(x: u64) -> u64 {
    x * 3
}

workflow! {
    #[trigger(http = "POST /steps")]
    steps: parse -> enrich -> store;

    #[trigger(http = "POST /pure-steps")]
    pure_steps: parse_pure -> enrich_pure -> store;
}

static REQUEST: support::Request = support::Request {
    path: "/steps",
    body: "41",
    expect: "HTTP/1.1 200",
};
static PURE_REQUEST: support::Request = support::Request {
    path: "/pure-steps",
    body: "41",
    expect: "HTTP/1.1 200",
};

/// The median time of a 4 KiB overwrite followed by `fdatasync`, in the journal's directory.
fn fdatasync_p50_us(dir: &std::path::Path) -> f64 {
    use std::io::{Seek, Write};
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let page = [7u8; 4096];
    file.write_all(&page).unwrap();
    file.sync_all().unwrap();
    let mut times: Vec<f64> = (0..400)
        .map(|_| {
            let t = std::time::Instant::now();
            file.seek(std::io::SeekFrom::Start(0)).unwrap();
            file.write_all(&page).unwrap();
            file.sync_data().unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let _ = std::fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The metric `name` (a counter without labels) of the runner at `addr`; NaN without it.
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

/// `nanoflow_journal_transactions_total` of the runner at `addr`.
fn transactions(addr: SocketAddr) -> f64 {
    metric(addr, "nanoflow_journal_transactions_total")
}

/// The journal's own `fdatasync`s of its WAL and their time in all, in microseconds.
fn syncs(addr: SocketAddr) -> (f64, f64) {
    (
        metric(addr, "nanoflow_journal_syncs_total"),
        metric(addr, "nanoflow_journal_sync_seconds_total") * 1e6,
    )
}

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
                .workflow(pure_steps)
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
    std::fs::create_dir_all(&dir).unwrap();
    let durable = start(Some(dir.join("journal.db")));

    println!("durability benchmark: 3-node workflow over HTTP, {secs} s per measurement, loopback");
    let disk_us = fdatasync_p50_us(&dir);
    println!("this disk: 4 KiB overwrite + fdatasync p50 {disk_us:.0} us");
    // Group commit turns concurrency into larger batches per fsync, so throughput is measured at
    // two client counts; latency with one client.
    let servers = [
        ("journal off", &memory, &REQUEST),
        ("journal on (SQLite)", &durable, &REQUEST),
        ("journal on, 2 pure", &durable, &PURE_REQUEST),
    ];
    let mut ratios = Vec::new();
    for conns in [32, 256] {
        let mut rps = Vec::new();
        for (name, server, request) in servers {
            let before = transactions(server.local_addr());
            let s = support::load(server.local_addr(), request, conns, secs);
            let r = s.requests as f64 / s.secs;
            let per_run =
                (transactions(server.local_addr()) - before) / (s.requests + s.warmup) as f64;
            let commits = if per_run.is_nan() {
                String::new()
            } else {
                format!("   {per_run:.2} commits/run")
            };
            println!(
                "{name:<20} {conns:>3} conns: {r:>8.0} runs/s   p50 {:>6.0} us   p99 {:>6.0} us{commits}",
                s.p50_us, s.p99_us
            );
            rps.push(r);
        }
        ratios.push((conns, rps[1] / rps[0], rps[2] / rps[0]));
    }
    let mut p50 = Vec::new();
    // The journal's own syncs while one client runs the 3-node workflow: their mean time is
    // the disk's share of each commit, so commits per run times it is the floor of a run.
    let mut sync_us = f64::NAN;
    let mut commits_per_run = f64::NAN;
    for (name, server, request) in servers {
        let before = transactions(server.local_addr());
        let synced_before = syncs(server.local_addr());
        let one = support::load(server.local_addr(), request, 1, secs);
        let per_run =
            (transactions(server.local_addr()) - before) / (one.requests + one.warmup) as f64;
        let commits = if per_run.is_nan() {
            String::new()
        } else {
            format!("   {per_run:.2} commits/run")
        };
        println!(
            "{name:<20}   1 conn : p50 {:>6.0} us   p99 {:>6.0} us per run{commits}",
            one.p50_us, one.p99_us
        );
        if std::ptr::eq(request, &REQUEST) && !per_run.is_nan() {
            let synced_after = syncs(server.local_addr());
            sync_us = (synced_after.1 - synced_before.1) / (synced_after.0 - synced_before.0);
            commits_per_run = per_run;
        }
        p50.push(one.p50_us);
    }
    for (conns, durable, pure) in ratios {
        println!(
            "durable / non-durable throughput at {conns} connections: {durable:.3}x (2 pure nodes: {pure:.3}x)"
        );
    }
    println!(
        "durable p50 latency of one 3-node run: {:.2} ms = {:.1} fdatasyncs of this disk (2 pure nodes: {:.2} ms = {:.1})",
        p50[1] / 1000.0,
        p50[1] / disk_us,
        p50[2] / 1000.0,
        p50[2] / disk_us
    );
    println!(
        "  of which the journal's own syncs: {commits_per_run:.2} commits/run x {sync_us:.0} us per fdatasync of its WAL = {:.2} ms ({:.1}x this disk's 4 KiB fdatasync; the rest: the run, SQLite and the hand-offs {:.2} ms, journal off {:.2} ms)",
        commits_per_run * sync_us / 1000.0,
        sync_us / disk_us,
        (p50[1] - commits_per_run * sync_us) / 1000.0,
        p50[0] / 1000.0
    );
    rt.block_on(memory.shutdown()).unwrap();
    rt.block_on(durable.shutdown()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
