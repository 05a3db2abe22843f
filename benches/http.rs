//! HTTP throughput and latency of a 3-node workflow behind its trigger, against a bare axum
//! handler doing the same work and returning the same JSON, with the same in-tree load
//! generator (keep-alive HTTP/1.1 connections on loopback), in one run.
//!
//! Three servers in one process: bare axum, nanoflow without the journal (`--journal off`), and
//! nanoflow as `serve` starts by default (the SQLite journal, in a temporary file).
//!
//! `cargo bench -p nanoflow --bench http` (env `BENCH_SECS`, `BENCH_CONNS`, `BENCH_ROUNDS` to
//! change the load; `BENCH_HOLD=60` prints the three addresses and serves them for 60 s
//! instead, for `wrk`: see `benches/wrk.sh`). Each round measures the three in turn; the
//! summary gives the median of the rounds' ratios, and the best round of each.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;

use axum::routing::post;
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

#[node]
fn validate(order: Order) -> Result<Order, NodeError> {
    check(&order).map_err(|e| NodeError::permanent(e).with_status(422))?;
    Ok(order)
}
#[node]
fn price(order: Order) -> Quote {
    quote(&order)
}
#[node]
fn confirm(q: Quote) -> Confirmation {
    confirmation(&q)
}

workflow! {
    #[trigger(http = "POST /orders")]
    orders: validate -> price -> confirm;
}

async fn bare(body: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let order: Order = match serde_json::from_slice(&body) {
        Ok(o) => o,
        Err(e) => {
            return (axum::http::StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response()
        }
    };
    if let Err(e) = check(&order) {
        return (axum::http::StatusCode::UNPROCESSABLE_ENTITY, e).into_response();
    }
    let out = confirmation(&quote(&order));
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&out).unwrap(),
    )
        .into_response()
}

const BODY: &str =
    r#"{"id":"o-1","customer":"ada","items":[{"sku":"apple","qty":3},{"sku":"pear","qty":2}]}"#;
static REQUEST: support::Request = support::Request {
    path: "/orders",
    body: BODY,
    expect: "HTTP/1.1 200",
};

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    let conns: usize = std::env::var("BENCH_CONNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4)
        .max(1);
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let bare_addr = server_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/orders", post(bare));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });
    let start = |journal: Option<std::path::PathBuf>| {
        server_rt.block_on(async {
            Runner::new()
                .workflow(orders)
                .start(ServeConfig {
                    addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                    journal,
                    ..ServeConfig::default()
                })
                .await
                .unwrap()
        })
    };
    let dir = std::env::temp_dir().join(format!("nanoflow-bench-http-{}", std::process::id()));
    let off = start(None);
    let on = start(Some(dir.join("journal.db")));
    let contenders = [
        ("bare axum", bare_addr),
        ("journal off", off.local_addr()),
        ("journal on", on.local_addr()),
    ];

    if let Some(hold) = std::env::var("BENCH_HOLD")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        for (key, (_, addr)) in ["bare", "off", "on"].into_iter().zip(contenders) {
            println!("serving {key} http://{addr}/orders");
        }
        std::thread::sleep(std::time::Duration::from_secs(hold));
        return;
    }

    println!("HTTP benchmark: {conns} keep-alive connections, {rounds} rounds of {secs} s each, loopback, 2 server threads");
    let mut best = [(0.0f64, 0.0f64, 0.0f64); 3];
    // Each round measures the three in turn; a round's ratios compare measurements made
    // seconds apart, so a slow spell of the machine (a shared VM) weighs on both sides.
    let mut ratios: [Vec<[f64; 3]>; 3] = Default::default();
    for round in 1..=rounds {
        let mut this = [[0.0f64; 3]; 3];
        for (i, (name, addr)) in contenders.into_iter().enumerate() {
            let s = support::load(addr, &REQUEST, conns, secs);
            let rps = s.requests as f64 / s.secs;
            println!(
                "round {round} {name:<12}: {rps:>9.0} req/s   p50 {:>6.0} us   p99 {:>6.0} us   ({} requests)",
                s.p50_us, s.p99_us, s.requests
            );
            if rps > best[i].0 {
                best[i] = (rps, s.p50_us, s.p99_us);
            }
            this[i] = [rps, s.p50_us, s.p99_us];
        }
        for i in 1..3 {
            ratios[i].push(std::array::from_fn(|k| this[i][k] / this[0][k]));
        }
    }
    for (i, name) in [(1, "journal off"), (2, "journal on")] {
        let median = |k: usize| support::median(ratios[i].iter().map(|r| r[k]).collect());
        println!(
            "nanoflow {name} / bare axum: throughput {:.2}x   p50 {:.2}x   p99 {:.2}x   (median of the rounds' ratios)",
            median(0),
            median(1),
            median(2)
        );
        println!(
            "nanoflow {name} / bare axum: throughput {:.2}x   p50 {:.2}x   p99 {:.2}x   (best round of each)",
            best[i].0 / best[0].0,
            best[i].1 / best[0].1,
            best[i].2 / best[0].2
        );
    }
    server_rt.block_on(off.shutdown()).unwrap();
    server_rt.block_on(on.shutdown()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
