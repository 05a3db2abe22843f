//! Behaviour of the typed in-process runner: the architecture's example, every graph shape,
//! errors naming workflow, node and attempt, retries, timeouts and panics.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nanoflow::prelude::*;
use nanoflow::{Endpoint, ErrorKind};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub qty: u32,
    pub unit_cents: u64,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Priced {
    pub id: String,
    pub total_cents: u64,
}

#[node]
async fn price(o: Order) -> Result<Priced, NodeError> {
    if o.qty == 0 {
        return Err(NodeError::permanent("qty must be at least 1"));
    }
    Ok(Priced {
        id: o.id,
        total_cents: o.qty as u64 * o.unit_cents,
    })
}
#[node(retries = 3, backoff = "50ms", timeout = "2s")]
fn tax(p: Priced) -> u64 {
    p.total_cents / 10
}
#[node]
fn shipping(p: Priced) -> u64 {
    if p.total_cents > 10_000 {
        0
    } else {
        500
    }
}
#[node]
fn total(parts: (u64, u64)) -> u64 {
    parts.0 + parts.1
}

workflow! {
    /// Prices an order, computes tax and shipping in parallel, then totals.
    #[trigger(http = "POST /checkout")]
    pub checkout: price -> (tax, shipping) -> total;
}

fn order(qty: u32, unit_cents: u64) -> Order {
    Order {
        id: "o-1".into(),
        qty,
        unit_cents,
    }
}

#[tokio::test]
async fn architecture_example_runs() {
    // 3 x 1000 = 3000; tax 300; shipping 500 (under 10_000).
    let due: u64 = checkout.run(order(3, 1000)).await.unwrap();
    assert_eq!(due, 800);
    // 20 x 1000 = 20_000; tax 2000; free shipping.
    assert_eq!(checkout.run(order(20, 1000)).await.unwrap(), 2000);
}

#[tokio::test]
async fn nodes_stay_plain_functions() {
    assert_eq!(
        tax(Priced {
            id: "x".into(),
            total_cents: 1000
        }),
        100
    );
    assert_eq!(total((1, 2)), 3);
    let p = price(order(2, 5)).await.unwrap();
    assert_eq!(p.total_cents, 10);
}

#[tokio::test]
async fn error_names_workflow_node_and_attempt() {
    let err = checkout.run(order(0, 1000)).await.unwrap_err();
    match &err {
        nanoflow::Error::Node {
            workflow,
            node,
            attempt,
            error,
            ..
        } => {
            assert_eq!(*workflow, "checkout");
            assert_eq!(*node, "price");
            assert_eq!(*attempt, 1);
            assert_eq!(error.kind(), ErrorKind::Permanent);
            assert_eq!(error.message(), "qty must be at least 1");
        }
        other => panic!("unexpected error {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("workflow `checkout` failed at node `price` (attempt 1"),
        "{text}"
    );
}

#[test]
fn graph_is_introspectable() {
    let g = checkout.graph();
    assert_eq!(g.name, "checkout");
    assert_eq!(
        g.doc,
        "Prices an order, computes tax and shipping in parallel, then totals."
    );
    let names: Vec<_> = g.steps.iter().map(|s| s.name).collect();
    assert_eq!(names, ["price", "tax", "shipping", "total"]);
    assert!(g.input_type.ends_with("Order"));
    assert_eq!(g.output_type, "u64");
    assert_eq!(g.step("total").unwrap().input_type, "(u64, u64)");
    assert_eq!(g.step("tax").unwrap().options.retries, 3);
    assert_eq!(
        g.step("tax").unwrap().options.timeout,
        Some(Duration::from_secs(2))
    );
    use Endpoint::*;
    assert_eq!(
        g.edges,
        vec![
            (Input, Step(0)),
            (Step(0), Step(1)),
            (Step(0), Step(2)),
            (Step(1), Step(3)),
            (Step(2), Step(3)),
            (Step(3), Output)
        ]
    );
    let mermaid = g.to_mermaid();
    assert!(mermaid.starts_with("flowchart LR"));
    assert!(
        mermaid.contains("s0 --> s1") && mermaid.contains("s2 --> s3"),
        "{mermaid}"
    );
    let dot = g.to_dot();
    assert!(
        dot.contains("digraph \"checkout\"") && dot.contains("s1 -> s3;"),
        "{dot}"
    );
    assert_eq!(g.triggers.len(), 1);
    assert_eq!(g.triggers[0].to_string(), "http POST /checkout");
}

// ---- more shapes: nested branches, fan-out at the start, aliases, tuple outputs ----

#[node]
fn double(x: u64) -> u64 {
    x * 2
}
#[node]
fn inc(x: u64) -> u64 {
    x + 1
}
#[node]
fn describe(x: u64) -> String {
    format!("n={x}")
}
#[node]
fn join(parts: (u64, String)) -> String {
    format!("{}|{}", parts.0, parts.1)
}

workflow! {
    nested: double -> (inc -> double as double_again, describe) -> join;
    starts_wide: (inc, describe) -> join;
    ends_wide: double -> (inc, describe);
    aliased: inc -> inc as inc2 -> inc as inc3;
}

#[tokio::test]
async fn nested_branches_and_aliases() {
    // 5*2 = 10; branch 1: (10+1)*2 = 22; branch 2: "n=10"
    assert_eq!(nested.run(5).await.unwrap(), "22|n=10");
    assert_eq!(starts_wide.run(1).await.unwrap(), "2|n=1");
    assert_eq!(ends_wide.run(4).await.unwrap(), (9, "n=8".to_owned()));
    assert_eq!(aliased.run(0).await.unwrap(), 3);
    let names: Vec<_> = aliased
        .graph()
        .steps
        .iter()
        .map(|s| (s.name, s.node))
        .collect();
    assert_eq!(names, [("inc", "inc"), ("inc2", "inc"), ("inc3", "inc")]);
    let g = nested.graph();
    assert!(
        g.edges.contains(&(Endpoint::Step(2), Endpoint::Step(4))),
        "{:?}",
        g.edges
    );
}

// ---- parallel branches really overlap ----

#[node]
async fn slow_a(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(200)).await;
    x
}
#[node]
async fn slow_b(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(200)).await;
    x + 1
}
#[node]
fn add(p: (u64, u64)) -> u64 {
    p.0 + p.1
}
workflow! {
    parallel: (slow_a, slow_b) -> add;
}

#[tokio::test(start_paused = true)]
async fn branches_run_concurrently() {
    let start = tokio::time::Instant::now();
    assert_eq!(parallel.run(1).await.unwrap(), 3);
    // Sequential would take 400 ms of (virtual) time.
    assert_eq!(start.elapsed(), Duration::from_millis(200));
}

// ---- retries, timeouts, panics ----

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);
#[node(retries = 3, backoff = "100ms", max_backoff = "1s")]
async fn flaky(x: u64) -> Result<u64, NodeError> {
    let n = FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    if n < 3 {
        Err(NodeError::retryable(format!("try {n} failed")))
    } else {
        Ok(x * 10)
    }
}
workflow! { retrying: flaky; }

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_with_backoff() {
    let start = tokio::time::Instant::now();
    assert_eq!(retrying.run(4).await.unwrap(), 40);
    assert_eq!(FLAKY_CALLS.load(Ordering::SeqCst), 3);
    // Two retries: first in [50, 100] ms, second in [100, 200] ms.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited <= Duration::from_millis(300),
        "{waited:?}"
    );
}

static PERMANENT_CALLS: AtomicU32 = AtomicU32::new(0);
#[node(retries = 5, backoff = "1ms")]
fn refuses(_: u64) -> Result<u64, NodeError> {
    PERMANENT_CALLS.fetch_add(1, Ordering::SeqCst);
    Err(NodeError::permanent("no").with_status(409))
}
workflow! { permanent: refuses; }

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let err = permanent.run(1).await.unwrap_err();
    assert_eq!(PERMANENT_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(err.node_error().unwrap().status(), Some(409));
}

static SLOW_CALLS: AtomicU32 = AtomicU32::new(0);
#[node(timeout = "50ms", retries = 1, backoff = "10ms")]
async fn sleepy(x: u64) -> u64 {
    SLOW_CALLS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    x
}
workflow! { timing_out: sleepy; }

#[tokio::test(start_paused = true)]
async fn timeouts_fail_the_attempt_and_are_retried() {
    let err = timing_out.run(1).await.unwrap_err();
    assert_eq!(SLOW_CALLS.load(Ordering::SeqCst), 2);
    match err {
        nanoflow::Error::Node {
            node,
            attempt,
            error,
            ..
        } => {
            assert_eq!(node, "sleepy");
            assert_eq!(attempt, 2);
            assert_eq!(error.kind(), ErrorKind::Timeout);
        }
        other => panic!("{other:?}"),
    }
}

#[node]
fn explodes(x: u64) -> u64 {
    if x == 26 {
        panic!("unlucky {x}");
    }
    x
}
workflow! { panicky: double -> explodes; }

#[tokio::test]
async fn panics_become_node_failures() {
    // 13 * 2 = 26 makes `explodes` panic; the test (the runner) survives.
    let err = panicky.run(13).await.unwrap_err();
    assert!(err.to_string().contains("node `explodes`"), "{err}");
    assert_eq!(err.node_error().unwrap().kind(), ErrorKind::Panic);
    assert!(err.node_error().unwrap().message().contains("unlucky 26"));
    assert_eq!(panicky.run(3).await.unwrap(), 6);
}

// A failing branch cancels its sibling.
static CANCELLED_FINISHED: AtomicU32 = AtomicU32::new(0);
#[node]
async fn long_branch(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_secs(60)).await;
    CANCELLED_FINISHED.fetch_add(1, Ordering::SeqCst);
    x
}
#[node]
fn fails_fast(_: u64) -> Result<u64, NodeError> {
    Err(NodeError::permanent("boom"))
}
workflow! { cancelling: (long_branch, fails_fast) -> add; }

#[tokio::test(start_paused = true)]
async fn a_failed_branch_cancels_the_others() {
    let start = tokio::time::Instant::now();
    let err = cancelling.run(1).await.unwrap_err();
    assert!(err.to_string().contains("fails_fast"));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(CANCELLED_FINISHED.load(Ordering::SeqCst), 0);
}

// Non-Clone inputs are still retried (copied through JSON).
#[derive(Debug, Serialize, Deserialize)]
pub struct NotClone {
    v: u32,
}
static NC_CALLS: AtomicU32 = AtomicU32::new(0);
#[node(retries = 2, backoff = "1ms")]
fn needs_copy(x: NotClone) -> Result<u32, NodeError> {
    if NC_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(NodeError::retryable("first try fails"));
    }
    Ok(x.v)
}
workflow! { non_clone: needs_copy; }

#[tokio::test]
async fn non_clone_inputs_are_retried() {
    assert_eq!(non_clone.run(NotClone { v: 7 }).await.unwrap(), 7);
    assert_eq!(NC_CALLS.load(Ordering::SeqCst), 2);
}

// `?` on any std error converts into a retryable NodeError.
#[node]
fn parse_number(s: String) -> Result<u64, NodeError> {
    Ok(s.trim().parse::<u64>()?)
}
workflow! { parsing: parse_number -> double; }

#[tokio::test]
async fn std_errors_convert() {
    assert_eq!(parsing.run(" 21 ".into()).await.unwrap(), 42);
    let err = parsing.run("x".into()).await.unwrap_err();
    assert_eq!(err.node_error().unwrap().kind(), ErrorKind::Retryable);
}
