//! Graph expressiveness: `match` on an enum output, `if` on a `bool` node, `map(..)` over a
//! collection, workflows used as nodes; their graphs and exports; and their journaling, so a
//! re-driven (or crash-resumed) run skips completed arms, items and sub-workflow steps.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use nanoflow::prelude::*;
use nanoflow::{Endpoint, ErrorKind, ServeConfig, Server, StepKind};
use serde::{Deserialize, Serialize};
use support::{get, post_json, request};

// ---- match: one arm per variant, each taking its payload ----

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    pub id: u32,
    pub cents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Review {
    Approved(Claim),
    Rejected(String),
    Escalated { level: u8, note: String },
    Pending,
}

#[node]
fn review(c: Claim) -> Review {
    match c.cents {
        0 => Review::Pending,
        1..=999 => Review::Approved(c),
        1000..=9999 => Review::Escalated {
            level: (c.cents / 1000) as u8,
            note: format!("claim {}", c.id),
        },
        _ => Review::Rejected(format!("claim {} is too large", c.id)),
    }
}
#[node]
fn pay(c: Claim) -> u64 {
    c.cents
}
#[node]
fn receipt(cents: u64) -> String {
    format!("paid {cents}")
}
#[node]
fn refuse(reason: String) -> String {
    format!("refused: {reason}")
}
#[node]
fn escalate(level: u8) -> String {
    format!("escalated to level {level}")
}
#[node]
fn wait(_: ()) -> String {
    "waiting".to_owned()
}
#[node]
fn unpaid(r: Review) -> String {
    format!("unpaid: {r:?}")
}
#[node]
fn shout(s: String) -> String {
    s.to_uppercase()
}

workflow! {
    /// Each arm takes its variant's payload; the arms rejoin at `shout`.
    claims: review -> match {
        Approved(c) => pay -> receipt,
        Rejected(reason) => refuse,
        Escalated { level, .. } => escalate,
        Pending => wait,
    } -> shout;

    /// A `match` ending the workflow: its arms give the workflow's output.
    claims_end: review -> match {
        Review::Approved(c) => pay -> receipt,
        _ => unpaid,
    };
}

fn claim(id: u32, cents: u64) -> Claim {
    Claim { id, cents }
}

#[tokio::test]
async fn each_match_arm_is_taken() {
    assert_eq!(claims.run(claim(1, 500)).await.unwrap(), "PAID 500");
    assert_eq!(
        claims.run(claim(2, 50_000)).await.unwrap(),
        "REFUSED: CLAIM 2 IS TOO LARGE"
    );
    assert_eq!(
        claims.run(claim(3, 4000)).await.unwrap(),
        "ESCALATED TO LEVEL 4"
    );
    assert_eq!(claims.run(claim(4, 0)).await.unwrap(), "WAITING");
    assert_eq!(claims_end.run(claim(5, 10)).await.unwrap(), "paid 10");
    assert_eq!(
        claims_end.run(claim(6, 0)).await.unwrap(),
        "unpaid: Pending"
    );
}

// `Option` is an enum like any other.
#[node]
fn lookup(key: String) -> Option<u64> {
    key.strip_prefix("n").and_then(|n| n.parse().ok())
}
#[node]
fn found(n: u64) -> String {
    format!("found {n}")
}
#[node]
fn missing(_: ()) -> String {
    "missing".to_owned()
}
workflow! {
    lookups: lookup -> match { Some(n) => found, None => missing };
}

#[tokio::test]
async fn matching_an_option() {
    assert_eq!(lookups.run("n42".into()).await.unwrap(), "found 42");
    assert_eq!(lookups.run("x".into()).await.unwrap(), "missing");
}

// A payload goes on to any stage: an `if`, a `map`, a fan-out.
#[node]
fn batch(n: u64) -> Option<Vec<u64>> {
    (n > 0).then(|| (1..=n).collect())
}
#[node]
fn nothing(_: ()) -> u64 {
    0
}
workflow! {
    payloads: batch -> match {
        Some(xs) => map(double) -> sum,
        None => nothing,
    };
    routed_claims: review -> match {
        Approved(c) => if is_large { manual } else { automatic },
        _ => unpaid,
    };
}

#[tokio::test]
async fn a_payload_feeds_a_map_or_an_if() {
    assert_eq!(payloads.run(3).await.unwrap(), 12);
    assert_eq!(payloads.run(0).await.unwrap(), 0);
    assert_eq!(
        routed_claims.run(claim(7, 500)).await.unwrap(),
        "automatic 7"
    );
    assert!(routed_claims
        .run(claim(8, 5000))
        .await
        .unwrap()
        .starts_with("unpaid"));
}

// ---- if: a `bool` node chooses the branch that gets the value ----

#[node]
fn is_large(c: Claim) -> bool {
    c.cents >= 1000
}
#[node]
fn is_tiny(c: Claim) -> bool {
    c.cents < 10
}
#[node]
fn manual(c: Claim) -> String {
    format!("manual {}", c.id)
}
#[node]
fn automatic(c: Claim) -> String {
    format!("automatic {}", c.id)
}
#[node]
fn ignore(c: Claim) -> String {
    format!("ignored {}", c.id)
}

workflow! {
    routing: if is_large { manual } else if is_tiny { ignore } else { automatic } -> shout;
}

#[tokio::test]
async fn each_if_branch_is_taken() {
    assert_eq!(routing.run(claim(1, 5000)).await.unwrap(), "MANUAL 1");
    assert_eq!(routing.run(claim(2, 5)).await.unwrap(), "IGNORED 2");
    assert_eq!(routing.run(claim(3, 500)).await.unwrap(), "AUTOMATIC 3");
}

// ---- map: a chain per item, in input order, a bounded number at a time ----

#[node]
fn split(n: u64) -> Vec<u64> {
    (0..n).collect()
}
#[node]
async fn jittery_square(x: u64) -> u64 {
    // Later items finish first: the output must still be in input order.
    tokio::time::sleep(Duration::from_millis(20 - x % 20)).await;
    x * x
}
#[node]
fn sum(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}
#[node]
fn listed(xs: Vec<u64>) -> String {
    xs.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

workflow! {
    squares: split -> map(jittery_square, concurrency = 8) -> listed;
}

#[tokio::test(start_paused = true)]
async fn map_keeps_input_order_with_concurrency() {
    let expected: Vec<String> = (0..40u64).map(|x| (x * x).to_string()).collect();
    let start = tokio::time::Instant::now();
    assert_eq!(squares.run(40).await.unwrap(), expected.join(","));
    // 40 items of up to 20 ms, 8 at a time: far less than 40 one after the other.
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(squares.run(0).await.unwrap(), "");
}

workflow! {
    doubled: map(double, concurrency = 4);
}

#[tokio::test]
async fn a_map_of_items_finishing_at_once_keeps_every_item_in_order() {
    // Items of a CPU-only node finish on their first poll; more of them than the map runs in
    // one go before letting other tasks run.
    let input: Vec<u64> = (0..5_000).collect();
    let output = doubled.run(input.clone()).await.unwrap();
    assert_eq!(output, input.iter().map(|x| x * 2).collect::<Vec<_>>());
}

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MAX_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static STARTED: AtomicUsize = AtomicUsize::new(0);

#[node]
async fn tracked(x: u64) -> u64 {
    STARTED.fetch_add(1, Ordering::SeqCst);
    let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    MAX_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
    // Stay in flight across a few polls so that items overlap.
    for _ in 0..(x % 3 + 1) {
        tokio::task::yield_now().await;
    }
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    x + 1
}

workflow! {
    many: split -> map(tracked, concurrency = 8) -> sum;
}

#[tokio::test]
async fn a_map_of_10_000_items_holds_at_most_its_concurrency_in_flight() {
    let total = many.run(10_000).await.unwrap();
    assert_eq!(total, (1..=10_000u64).sum::<u64>());
    assert_eq!(STARTED.load(Ordering::SeqCst), 10_000);
    assert_eq!(
        MAX_IN_FLIGHT.load(Ordering::SeqCst),
        8,
        "items in flight at once"
    );
}

// A failed item fails the run, named with its index, and cancels the items in flight.
static FAILING_STARTED: AtomicU32 = AtomicU32::new(0);
static FAILING_FINISHED: AtomicU32 = AtomicU32::new(0);
#[node]
async fn fails_on_3(x: u64) -> Result<u64, NodeError> {
    FAILING_STARTED.fetch_add(1, Ordering::SeqCst);
    if x == 3 {
        return Err(NodeError::permanent("three is right out"));
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    FAILING_FINISHED.fetch_add(1, Ordering::SeqCst);
    Ok(x)
}
workflow! {
    fail_fast: split -> map(fails_on_3, concurrency = 4) -> sum;
    collecting: split -> map(checked, collect_errors) -> tally;
}

#[tokio::test(start_paused = true)]
async fn a_failed_item_fails_the_run_and_cancels_the_rest() {
    let start = tokio::time::Instant::now();
    let err = fail_fast.run(100).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("workflow `fail_fast` failed at node `fails_on_3[3]`"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(
        FAILING_STARTED.load(Ordering::SeqCst),
        4,
        "no item started after the failure"
    );
    assert_eq!(
        FAILING_FINISHED.load(Ordering::SeqCst),
        0,
        "the items in flight were cancelled"
    );
}

#[node]
fn checked(x: u64) -> Result<u64, NodeError> {
    if x % 2 == 1 {
        return Err(NodeError::permanent(format!("{x} is odd")));
    }
    Ok(x * 10)
}
#[node]
fn tally(results: Vec<Result<u64, NodeError>>) -> String {
    results
        .iter()
        .map(|r| match r {
            Ok(v) => v.to_string(),
            Err(e) => format!("<{}>", e.message()),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn collect_errors_gives_each_item_its_result() {
    assert_eq!(
        collecting.run(4).await.unwrap(),
        "0 <1 is odd> 20 <3 is odd>"
    );
}

// A chain per item, a map as the first stage (the input is a `Vec`), nested maps.
#[node]
fn parse_item(s: String) -> Result<u64, NodeError> {
    Ok(s.trim().parse::<u64>()?)
}
#[node]
fn double(x: u64) -> u64 {
    x * 2
}
#[node]
fn rows(n: u64) -> Vec<Vec<u64>> {
    (0..n).map(|r| (0..=r).collect()).collect()
}
#[node]
fn row_sums(rows: Vec<Vec<u64>>) -> Vec<u64> {
    rows.iter().map(|r| r.iter().sum()).collect()
}
workflow! {
    parse_all: map(parse_item -> double, concurrency = 2) -> sum;
    grid: rows -> map(map(double as cell)) -> row_sums;
}

#[tokio::test]
async fn maps_of_chains_first_and_nested() {
    let input = vec![" 1".to_owned(), "2 ".to_owned(), "3".to_owned()];
    assert_eq!(parse_all.run(input).await.unwrap(), 12);
    let err = parse_all
        .run(vec!["1".into(), "x".into()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("node `parse_item[1]`"), "{err}");
    // Rows [0], [0, 1], [0, 1, 2], each cell doubled.
    assert_eq!(grid.run(3).await.unwrap(), vec![0, 2, 6]);
}

// An item that wakes itself and returns `Pending` (a hand-written yield) is polled again on
// the next turn of the runtime, not in a busy loop.
#[node]
async fn polite(x: u64) -> u64 {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
    x + 1
}
workflow! {
    politely: map(polite, concurrency = 3) -> sum;
}

#[tokio::test]
async fn items_that_wake_themselves_finish() {
    assert_eq!(
        politely.run((0..100).collect()).await.unwrap(),
        (1..=100).sum::<u64>()
    );
}

// Compensations of steps inside map items and sub-workflows run when the run fails later.
static UNDONE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
#[node]
fn reserve(x: u64) -> u64 {
    x
}
#[node]
fn release(x: u64) {
    UNDONE.lock().unwrap().push(format!("release {x}"));
}
#[node]
fn hold(p: Payment) -> Payment {
    p
}
#[node]
fn unhold(p: Payment) {
    UNDONE.lock().unwrap().push(format!("unhold {}", p.order));
}
#[node]
fn give_up(_: String) -> Result<String, NodeError> {
    Err(NodeError::permanent("giving up"))
}
#[node]
fn give_up_on_list(_: Vec<u64>) -> Result<u64, NodeError> {
    Err(NodeError::permanent("giving up"))
}
workflow! {
    #[compensate(reserve => release)]
    reserving: map(reserve) -> give_up_on_list;

    #[compensate(hold => unhold)]
    holding: hold -> record;
    compensated_sub: validate -> holding -> give_up;
}

#[tokio::test]
async fn compensations_inside_maps_and_sub_workflows_run_when_the_run_fails() {
    reserving.run(vec![1, 2, 3]).await.unwrap_err();
    let mut undone = std::mem::take(&mut *UNDONE.lock().unwrap());
    undone.sort();
    assert_eq!(undone, ["release 1", "release 2", "release 3"]);
    // `holding` succeeded inside `compensated_sub`; the parent's failure undoes its steps
    // (the parent itself declares no compensation).
    let err = compensated_sub.run("o-9".into()).await.unwrap_err();
    assert!(err.to_string().contains("node `give_up`"), "{err}");
    assert_eq!(*UNDONE.lock().unwrap(), ["unhold o-9"]);
}

// ---- sub-workflows: a workflow used as a node ----

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    pub order: String,
    pub cents: u64,
}

#[node]
fn validate(order: String) -> Payment {
    Payment {
        cents: order.len() as u64 * 100,
        order,
    }
}
#[node]
fn charge(p: Payment) -> Result<Payment, NodeError> {
    if p.order.contains("declined") {
        return Err(NodeError::permanent("card declined"));
    }
    Ok(p)
}
#[node]
fn record(p: Payment) -> String {
    format!("{}:{}", p.order, p.cents)
}
#[node]
fn confirm(r: String) -> String {
    format!("confirmed {r}")
}
#[node]
fn wrap(s: String) -> String {
    format!("[{s}]")
}

workflow! {
    /// Charges and records a payment.
    payment_flow: charge -> record;
    /// Validates, pays through `payment_flow`, confirms.
    checkout: validate -> payment_flow -> confirm;
    /// A sub-workflow's sub-workflow.
    outer_flow: wrap -> checkout -> shout;
}

#[tokio::test]
async fn sub_workflows_run_as_nodes_nested() {
    assert_eq!(checkout.run("ab".into()).await.unwrap(), "confirmed ab:200");
    assert_eq!(
        outer_flow.run("x".into()).await.unwrap(),
        "CONFIRMED [X]:300"
    );
}

// ---- graphs and their exports ----

#[test]
fn graphs_show_every_construct() {
    use Endpoint::*;
    let g = claims.graph();
    let names: Vec<_> = g.steps.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["review", "pay", "receipt", "refuse", "escalate", "wait", "shout"]
    );
    assert_eq!(
        g.labels,
        vec![
            (Step(0), Step(1), "Approved"),
            (Step(0), Step(3), "Rejected"),
            (Step(0), Step(4), "Escalated"),
            (Step(0), Step(5), "Pending"),
        ]
    );
    for arm_end in [2, 3, 4, 5] {
        assert!(g.edges.contains(&(Step(arm_end), Step(6))), "{:?}", g.edges);
    }
    let mermaid = g.to_mermaid();
    assert!(mermaid.contains("s0 -->|\"Approved\"| s1"), "{mermaid}");
    assert!(g.to_dot().contains("s0 -> s3 [label=\"Rejected\"];"));
    assert!(g
        .edges_text()
        .contains(&"review -> escalate [Escalated]".to_owned()));

    let g = routing.graph();
    assert!(matches!(g.steps[0].kind, StepKind::Condition));
    assert_eq!(g.step("is_tiny").unwrap().kind.as_str(), "condition");
    assert_eq!(g.label(Step(0), Step(1)), Some("true"));
    assert_eq!(g.label(Step(0), Step(2)), Some("false"));
    assert!(g.to_mermaid().contains("s0{\"is_large\"}"));
    assert!(g.to_dot().contains("s0 [shape=diamond"));

    let g = grid.graph();
    assert_eq!(g.maps.len(), 2);
    assert_eq!(g.maps[0].steps, vec![1]);
    assert_eq!(g.maps[0].concurrency, 16);
    assert_eq!(g.map_of(1), Some(1), "the innermost map");
    let mermaid = g.to_mermaid();
    assert!(
        mermaid.contains("subgraph m0 [\"map: each item, 16 at a time\"]\n        subgraph m1"),
        "{mermaid}"
    );
    let dot = collecting.graph().to_dot();
    assert!(dot.contains("subgraph cluster_m0 {"), "{dot}");
    assert!(dot.contains("errors collected"), "{dot}");
    assert_eq!(
        many.graph().input_type,
        "u64",
        "a map in the middle leaves the input alone"
    );
    assert_eq!(
        parse_all.graph().input_type,
        "alloc::vec::Vec<alloc::string::String>"
    );

    let g = checkout.graph();
    let sub = g.step("payment_flow").unwrap();
    assert_eq!(sub.kind.as_str(), "workflow");
    let inner = sub.subgraph().unwrap();
    assert_eq!(inner.name, "payment_flow");
    assert_eq!(inner.steps.len(), 2);
    assert!(g.to_mermaid().contains("s1[[\"payment_flow\"]]"));
    assert!(g.to_dot().contains("s1 [shape=box, peripheries=2"));
}

// ---- the journal: branches, items and sub-workflow steps are recorded and skipped on resume ----

static MAP_CALLS: AtomicU32 = AtomicU32::new(0);
static MAP_BROKEN_ITEM: AtomicU32 = AtomicU32::new(u32::MAX);
#[node]
async fn journaled_item(x: u64) -> Result<u64, NodeError> {
    MAP_CALLS.fetch_add(1, Ordering::SeqCst);
    if x == u64::from(MAP_BROKEN_ITEM.load(Ordering::SeqCst)) {
        return Err(NodeError::permanent(format!("item {x} is broken")));
    }
    Ok(x * 3)
}

static ARM_CALLS: AtomicU32 = AtomicU32::new(0);
static ARM_BROKEN: AtomicBool = AtomicBool::new(false);
static REVIEW_CALLS: AtomicU32 = AtomicU32::new(0);
#[node]
fn counted_review(c: Claim) -> Review {
    REVIEW_CALLS.fetch_add(1, Ordering::SeqCst);
    review(c)
}
#[node]
fn flaky_receipt(cents: u64) -> Result<String, NodeError> {
    ARM_CALLS.fetch_add(1, Ordering::SeqCst);
    if ARM_BROKEN.load(Ordering::SeqCst) {
        return Err(NodeError::permanent("printer jammed"));
    }
    Ok(format!("paid {cents}"))
}

static VALIDATE_CALLS: AtomicU32 = AtomicU32::new(0);
static RECORD_CALLS: AtomicU32 = AtomicU32::new(0);
static RECORD_BROKEN: AtomicBool = AtomicBool::new(false);
#[node]
fn counted_charge(p: Payment) -> Payment {
    VALIDATE_CALLS.fetch_add(1, Ordering::SeqCst);
    p
}
#[node]
fn flaky_record(p: Payment) -> Result<String, NodeError> {
    RECORD_CALLS.fetch_add(1, Ordering::SeqCst);
    if RECORD_BROKEN.load(Ordering::SeqCst) {
        return Err(NodeError::permanent("ledger offline"));
    }
    Ok(format!("{}:{}", p.order, p.cents))
}

workflow! {
    #[trigger(http = "/items")]
    journaled_map: split -> map(journaled_item, concurrency = 4) -> sum;

    #[trigger(http = "/claims")]
    journaled_branch: counted_review -> match {
        Approved(c) => pay -> flaky_receipt,
        _ => unpaid,
    };

    inner_payment: counted_charge -> flaky_record;

    #[trigger(http = "/pay")]
    journaled_sub: validate -> inner_payment -> confirm;
}

fn temp_journal() -> PathBuf {
    std::env::temp_dir()
        .join(format!("nanoflow-graph-{}", nanoflow::RunId::new()))
        .join("journal.db")
}

async fn start(journal: &std::path::Path) -> Server {
    Runner::new()
        .workflow(journaled_map)
        .workflow(journaled_branch)
        .workflow(journaled_sub)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(journal.to_path_buf()),
            ..ServeConfig::default()
        })
        .await
        .expect("server starts")
}

async fn wait_status(addr: SocketAddr, run_id: &str, status: &str) -> serde_json::Value {
    for _ in 0..500 {
        let r = get(addr, &format!("/runs/{run_id}")).await.json();
        if r["status"] == status {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("run {run_id} never reached {status}");
}

/// The steps that succeeded in a run's timeline, by name, sorted (steps started in the same
/// millisecond have no order).
fn succeeded(run: &serde_json::Value) -> Vec<String> {
    let mut steps: Vec<String> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == "succeeded")
        .map(|a| a["step"].as_str().unwrap().to_owned())
        .collect();
    steps.sort();
    steps
}

/// Fails a run, then re-drives it from its failed step (as a restart resumes a crashed run:
/// from the recorded outputs), and returns the re-driven run.
async fn fail_then_redrive(
    addr: SocketAddr,
    path: &str,
    body: &str,
    repair: impl FnOnce(),
) -> (serde_json::Value, serde_json::Value) {
    let r = post_json(addr, path, body).await;
    assert_eq!(r.status, 500, "{:?}", String::from_utf8_lossy(&r.body));
    let run_id = r.json()["error"]["run_id"].as_str().unwrap().to_owned();
    let failed = get(addr, &format!("/runs/{run_id}")).await.json();
    repair();
    let r = request(addr, "POST", &format!("/runs/{run_id}/retry"), &[], b"").await;
    assert_eq!(r.status, 202);
    let done = wait_status(addr, &run_id, "succeeded").await;
    (failed, done)
}

// The tests share a journal and node counters, so they run one after the other in this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_branch_and_sub_workflow_resume_from_the_journal() {
    let path = temp_journal();
    let server = start(&path).await;
    let addr = server.local_addr();

    // `GET /workflows` shows each step's kind, and the branch of each labelled edge.
    let list = get(addr, "/workflows").await.json();
    let find = |name: &str| {
        list["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(find("journaled_sub")["steps"][1]["kind"], "workflow");
    assert_eq!(find("journaled_sub")["steps"][0]["kind"], "node");
    let edges = find("journaled_branch")["edges"].clone();
    assert!(
        edges
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("counted_review -> pay [Approved]")),
        "{edges}"
    );

    // A map: items are journaled as `journaled_item[i]`; item 7 fails; the re-drive runs only
    // the items that had not completed.
    MAP_BROKEN_ITEM.store(7, Ordering::SeqCst);
    let (failed, done) = fail_then_redrive(addr, "/items", "20", || {
        MAP_BROKEN_ITEM.store(u32::MAX, Ordering::SeqCst)
    })
    .await;
    assert_eq!(failed["error"]["node"], "journaled_item[7]");
    let completed_before = succeeded(&failed)
        .iter()
        .filter(|s| s.starts_with("journaled_item["))
        .count() as u32;
    assert!(
        completed_before >= 7,
        "items 0 to 6 completed: {completed_before}"
    );
    assert_eq!(done["output"], (0..20u64).map(|x| x * 3).sum::<u64>());
    let items_after: Vec<String> = succeeded(&done)
        .into_iter()
        .filter(|s| s.starts_with("journaled_item["))
        .collect();
    assert_eq!(items_after.len(), 20, "{items_after:?}");
    for i in 0..20 {
        assert!(items_after.contains(&format!("journaled_item[{i}]")));
    }
    // Each item ran once but item 7, which ran twice (failed, then re-driven): the items
    // completed before the failure were not run again.
    assert_eq!(MAP_CALLS.load(Ordering::SeqCst), 21);

    // A branch: the arm's second step fails; the re-drive skips `counted_review` and `pay`.
    ARM_BROKEN.store(true, Ordering::SeqCst);
    let (failed, done) = fail_then_redrive(addr, "/claims", r#"{"id":1,"cents":300}"#, || {
        ARM_BROKEN.store(false, Ordering::SeqCst)
    })
    .await;
    assert_eq!(succeeded(&failed), ["counted_review", "pay"]);
    assert_eq!(succeeded(&done), ["counted_review", "flaky_receipt", "pay"]);
    assert_eq!(done["output"], "paid 300");
    assert_eq!(REVIEW_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(ARM_CALLS.load(Ordering::SeqCst), 2);

    // A sub-workflow: its steps are journaled as `inner_payment/..`; the re-drive skips the
    // completed one.
    RECORD_BROKEN.store(true, Ordering::SeqCst);
    let (failed, done) = fail_then_redrive(addr, "/pay", r#""abc""#, || {
        RECORD_BROKEN.store(false, Ordering::SeqCst)
    })
    .await;
    assert_eq!(failed["error"]["node"], "inner_payment/flaky_record");
    assert_eq!(
        succeeded(&failed),
        ["inner_payment/counted_charge", "validate"]
    );
    assert_eq!(done["output"], "confirmed abc:300");
    assert_eq!(
        succeeded(&done),
        [
            "confirm",
            "inner_payment/counted_charge",
            "inner_payment/flaky_record",
            "validate",
        ]
    );
    assert_eq!(VALIDATE_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(RECORD_CALLS.load(Ordering::SeqCst), 2);

    server.shutdown().await.unwrap();
}

#[node]
fn payments(orders: Vec<String>) -> Vec<Payment> {
    orders.into_iter().map(validate).collect()
}
#[node]
fn rows_of(orders: Vec<String>) -> Vec<Vec<String>> {
    vec![orders]
}
workflow! {
    pay_each: payments -> map(payment_flow);
    pay_rows: rows_of -> map(map(checkout));
}

#[tokio::test]
async fn errors_inside_sub_workflows_and_maps_name_the_scoped_step() {
    let err = outer_flow.run("declined".into()).await.unwrap_err();
    assert!(
        err.to_string().contains(
            "workflow `outer_flow` failed at node `checkout/payment_flow/charge` (attempt 1"
        ),
        "{err}"
    );
    assert_eq!(err.node_error().unwrap().kind(), ErrorKind::Permanent);
    let orders = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(
        pay_each.run(orders(&["a", "bb"])).await.unwrap(),
        ["a:100", "bb:200"]
    );
    let err = pay_each
        .run(orders(&["a", "declined", "c"]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("at node `payment_flow[1]/charge`"),
        "{err}"
    );
    let err = pay_rows
        .run(orders(&["a", "b", "declined"]))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("at node `checkout[0][2]/payment_flow/charge`"),
        "{err}"
    );
}
