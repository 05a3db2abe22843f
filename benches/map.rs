//! `map(..)` over 10,000 trivial items against a hand-written
//! `futures_util::stream::iter(..).map(..).buffer_unordered(n)` loop making the same calls, in
//! one process, at the same concurrency: a node that finishes at once (CPU only), and an async
//! node that yields once before it finishes (as a node waiting on I/O does).
//!
//! `cargo bench -p nanoflow --bench map`
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use futures_util::stream::{self, StreamExt as _};
use nanoflow::prelude::*;

#[node]
fn score(x: u64) -> u64 {
    black_box(x).wrapping_mul(3).wrapping_add(1)
}

#[node]
async fn score_async(x: u64) -> u64 {
    tokio::task::yield_now().await;
    black_box(x).wrapping_mul(3).wrapping_add(1)
}

workflow! {
    map1: map(score, concurrency = 1);
    map16: map(score, concurrency = 16);
    map256: map(score, concurrency = 256);
    async1: map(score_async, concurrency = 1);
    async16: map(score_async, concurrency = 16);
    async256: map(score_async, concurrency = 256);
}

const ITEMS: u64 = 10_000;
const ROUNDS: usize = 41;

/// The time to map `ITEMS` items, in ns per item.
fn time(f: &mut impl FnMut(Vec<u64>) -> Vec<u64>) -> f64 {
    let items: Vec<u64> = (0..ITEMS).collect();
    let start = Instant::now();
    let out = f(items);
    let elapsed = start.elapsed();
    assert_eq!(out.len() as u64, ITEMS);
    black_box(out);
    elapsed.as_nanos() as f64 / ITEMS as f64
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|x, y| x.total_cmp(y));
    samples[samples.len() / 2]
}

/// Runs the baseline and the map in alternate rounds (so that a busy machine slows both
/// alike) and returns the median ns per item of each and the median of the per-round ratios
/// of the map's throughput to the baseline's.
fn compare(
    mut baseline: impl FnMut(Vec<u64>) -> Vec<u64>,
    mut mapped: impl FnMut(Vec<u64>) -> Vec<u64>,
) -> (f64, f64, f64) {
    let (mut b, mut m, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (tb, tm) = if round % 2 == 0 {
            let tb = time(&mut baseline);
            (tb, time(&mut mapped))
        } else {
            let tm = time(&mut mapped);
            (time(&mut baseline), tm)
        };
        b.push(tb);
        m.push(tm);
        ratios.push(tb / tm);
    }
    (median(b), median(m), median(ratios))
}

/// Prints one row; returns the map's throughput as a fraction of the baseline's.
fn report(node: &str, n: usize, (baseline, mapped, ratio): (f64, f64, f64)) -> f64 {
    println!(
        "{node:<11} | {n:>11} | {baseline:>11.1} ns/it | {mapped:>7.1} ns/it | {:>6.1}%",
        ratio * 100.0
    );
    ratio
}

fn main() {
    // Free one large buffer first: glibc then serves buffers up to its size from the heap
    // instead of fresh mappings, so neither side's timing depends on which of them happened to
    // grow past the default mapping threshold (page faults).
    drop(black_box(vec![1u8; 8 << 20]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    println!(
        "nanoflow map benchmark ({ITEMS} trivial items, {ROUNDS} rounds alternating with the baseline, medians, current-thread runtime)"
    );
    println!(
        "node        | concurrency | buffer_unordered | nanoflow map | map throughput / baseline"
    );
    // `cargo bench -p nanoflow --bench map -- ready` runs only the rows of that node.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |node: &str| filter.as_deref().is_none_or(|f| node == f);
    let mut worst = f64::INFINITY;
    for n in [1usize, 16, 256].into_iter().filter(|_| wanted("ready")) {
        let figures = compare(
            |items| {
                rt.block_on(
                    stream::iter(items)
                        .map(|x| async move { score(x) })
                        .buffer_unordered(n)
                        .collect::<Vec<u64>>(),
                )
            },
            |items| {
                rt.block_on(async {
                    match n {
                        1 => map1.run(items).await,
                        16 => map16.run(items).await,
                        _ => map256.run(items).await,
                    }
                })
                .unwrap()
            },
        );
        worst = worst.min(report("ready", n, figures));
    }
    for n in [1usize, 16, 256].into_iter().filter(|_| wanted("yields")) {
        let figures = compare(
            |items| {
                rt.block_on(
                    stream::iter(items)
                        .map(score_async)
                        .buffer_unordered(n)
                        .collect::<Vec<u64>>(),
                )
            },
            |items| {
                rt.block_on(async {
                    match n {
                        1 => async1.run(items).await,
                        16 => async16.run(items).await,
                        _ => async256.run(items).await,
                    }
                })
                .unwrap()
            },
        );
        worst = worst.min(report("yields", n, figures));
    }
    println!(
        "worst ratio: {:.1}% of the baseline's throughput (target >= 80%)",
        worst * 100.0
    );
}
