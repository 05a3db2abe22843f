//! Per-node overhead of the typed in-process runner, against the same functions called
//! directly, in one process:
//!
//! - a 10-node chain of trivial nodes through `run()` vs the 10 functions called in a row;
//! - a 3-wide fan-out/fan-in through `run()` vs `tokio::join!` of the same calls.
//!
//! `cargo bench -p nanoflow --bench overhead`
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use nanoflow::prelude::*;

macro_rules! trivial_nodes {
    ($($name:ident),*) => {$(
        #[node]
        fn $name(x: u64) -> u64 {
            black_box(x).wrapping_mul(3).wrapping_add(1)
        }
    )*};
}
trivial_nodes!(n1, n2, n3, n4, n5, n6, n7, n8, n9, n10, src, a, b, c);

#[node]
fn sum(parts: (u64, u64, u64)) -> u64 {
    parts.0 ^ parts.1 ^ parts.2
}

workflow! {
    chain10: n1 -> n2 -> n3 -> n4 -> n5 -> n6 -> n7 -> n8 -> n9 -> n10;
    fan3: src -> (a, b, c) -> sum;
}

const ITERS: u64 = 200_000;
const ROUNDS: usize = 15;

/// Median over rounds of the mean ns per iteration.
fn measure<F: FnMut(u64) -> u64>(rt: &tokio::runtime::Runtime, mut f: F) -> f64 {
    let _guard = rt.enter();
    let mut samples: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let mut acc = 0u64;
            for i in 0..ITERS {
                acc = acc.wrapping_add(f(i));
            }
            black_box(acc);
            start.elapsed().as_nanos() as f64 / ITERS as f64
        })
        .collect();
    samples.sort_by(|x, y| x.total_cmp(y));
    samples[ROUNDS / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let direct10 = measure(&rt, |i| n10(n9(n8(n7(n6(n5(n4(n3(n2(n1(i)))))))))));
    let run10 = measure(&rt, |i| rt.block_on(chain10.run(i)).unwrap());
    let per_node = (run10 - direct10) / 10.0;

    let direct_join = measure(&rt, |i| {
        rt.block_on(async {
            let x = src(i);
            let (ra, rb, rc) = tokio::join!(async { a(x) }, async { b(x) }, async { c(x) });
            sum((ra, rb, rc))
        })
    });
    let run_fan = measure(&rt, |i| rt.block_on(fan3.run(i)).unwrap());

    println!("nanoflow overhead benchmark ({ITERS} iterations x {ROUNDS} rounds, median round)");
    println!("10-node chain, functions called directly : {direct10:>9.1} ns/run");
    println!("10-node chain, chain10.run()             : {run10:>9.1} ns/run");
    println!("  overhead per node                      : {per_node:>9.1} ns (target <= 1000 ns)");
    println!("3-wide fan-out/fan-in, tokio::join!      : {direct_join:>9.1} ns/run");
    println!("3-wide fan-out/fan-in, fan3.run()        : {run_fan:>9.1} ns/run");
    println!(
        "  ratio run / join!                      : {:>9.2}x",
        run_fan / direct_join
    );
}
