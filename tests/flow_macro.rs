//! Flow control written in `workflow!` (issue 15): `signal(..)` and `sleep(..)` steps,
//! `#[limit(..)]` and `#[timeout(..)]`, as the graph describes them and as an in-process run
//! (`Workflow::run`, no runner) executes them.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use nanoflow::prelude::*;
use nanoflow::StepKind;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charge {
    pub customer: String,
    pub tier: u8,
    pub cents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub customer: Customer,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Customer {
    pub id: u32,
}

#[node]
fn hold(cents: u64) -> u64 {
    cents
}

#[node]
fn decide(got: (u64, Option<Approval>)) -> String {
    match got {
        (cents, Some(a)) => format!("{cents} approved by {}", a.by),
        (cents, None) => format!("{cents} timed out"),
    }
}

#[node]
fn decide_required(got: (u64, Approval)) -> String {
    format!("{} approved by {}", got.0, got.1.by)
}

#[node]
fn stamp(cents: u64) -> u64 {
    cents + 1
}

#[node]
fn charge(c: Charge) -> Charge {
    c
}

#[node]
fn notify(c: Charge) -> u64 {
    c.cents
}

#[node]
fn open(a: Account) -> u32 {
    a.customer.id
}

workflow! {
    #[trigger(http = "POST /flow-macro/approve")]
    pub approve: hold -> signal(approval: Approval, timeout = "50ms") -> decide;

    pub approve_required: hold -> signal(approval: Approval) -> decide_required;

    pub two_signals: hold
        -> signal(first: Approval, timeout = "10ms")
        -> decide
        -> signal(second: u32, timeout = "10ms")
        -> done;

    #[timeout("1h")]
    pub later: hold -> sleep("20ms") -> stamp;

    pub sleepy: hold -> sleep("1ms") -> sleep("1ms") as pause -> sleep("1ms") -> stamp;

    #[limit(concurrency = 1, key = customer)]
    #[limit(rate = "100/s")]
    #[limit(debounce = "2s", key = customer)]
    #[limit(priority = tier)]
    pub per_customer: charge -> notify;

    #[limit(concurrency = 2, key = "customer.id")]
    pub per_account: open;

    pub branches: hold -> (sleep("1ms") -> stamp, stamp as stamp_2);
}

#[node]
fn done(got: (String, Option<u32>)) -> String {
    format!("{} / {:?}", got.0, got.1)
}

#[tokio::test]
async fn a_signal_that_times_out_passes_on_none() {
    let started = Instant::now();
    let out = approve
        .run(7)
        .await
        .expect("the run completes on its timeout");
    assert_eq!(out, "7 timed out");
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    let out = two_signals.run(3).await.expect("both signals time out");
    assert_eq!(out, "3 timed out / None");
}

#[test]
fn a_signal_is_a_step_of_the_graph() {
    let graph = approve.graph();
    let names: Vec<&str> = graph.steps.iter().map(|s| s.name).collect();
    assert_eq!(names, ["hold", "approval", "decide"]);
    let step = &graph.steps[1];
    assert_eq!(step.kind.as_str(), "signal");
    match step.kind {
        StepKind::Signal { timeout, signal } => {
            assert_eq!(timeout, Some(Duration::from_millis(50)));
            assert!(
                signal.type_name.ends_with("Approval"),
                "{}",
                signal.type_name
            );
            assert!((signal.check)(br#"{"by":"ann"}"#).is_ok());
            assert!((signal.check)(br#"{"who":"ann"}"#).is_err());
        }
        _ => unreachable!(),
    }
    let signals: Vec<_> = graph
        .signals()
        .map(|(name, timeout, _)| (name, timeout))
        .collect();
    assert_eq!(signals, [("approval", Some(Duration::from_millis(50)))]);
    let required = approve_required.graph();
    assert_eq!(required.steps[1].kind.as_str(), "signal");
    assert!(matches!(
        required.steps[1].kind,
        StepKind::Signal { timeout: None, .. }
    ));
    // The signal step sits between its neighbours in the drawing.
    let mermaid = graph.to_mermaid();
    assert!(mermaid.contains("s1([\"approval (signal)\"])"), "{mermaid}");
    assert!(mermaid.contains("s0 --> s1"), "{mermaid}");
    assert!(mermaid.contains("s1 --> s2"), "{mermaid}");
    assert!(graph.to_dot().contains("approval"));
    let two: Vec<&str> = two_signals.graph().signals().map(|(n, _, _)| n).collect();
    assert_eq!(two, ["first", "second"]);
}

#[test]
fn sleeps_are_steps_named_in_order() {
    let graph = later.graph();
    assert_eq!(graph.steps[1].name, "sleep");
    assert_eq!(graph.steps[1].kind.as_str(), "sleep");
    assert!(matches!(graph.steps[1].kind, StepKind::Sleep(d) if d == Duration::from_millis(20)));
    assert_eq!(graph.timeout, Some(Duration::from_secs(3600)));
    assert_eq!(approve.graph().timeout, None);
    let names: Vec<&str> = sleepy.graph().steps.iter().map(|s| s.name).collect();
    assert_eq!(names, ["hold", "sleep", "pause", "sleep_2", "stamp"]);
    let names: Vec<&str> = branches.graph().steps.iter().map(|s| s.name).collect();
    assert_eq!(names, ["hold", "sleep", "stamp", "stamp_2"]);
}

#[tokio::test]
async fn a_sleep_waits_and_passes_its_input_on() {
    let started = Instant::now();
    assert_eq!(later.run(41).await.unwrap(), 42);
    assert!(
        started.elapsed() >= Duration::from_millis(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sleepy.run(1).await.unwrap(), 2);
    assert_eq!(branches.run(1).await.unwrap(), (2, 2));
}

#[test]
fn limits_are_declared_on_the_graph() {
    let limits = &per_customer.graph().limits;
    assert!(limits.any());
    assert_eq!(limits.limits.len(), 3);
    assert_eq!(limits.concurrency(), Some(1));
    assert_eq!(limits.rate(), Some((100, Duration::from_secs(1))));
    assert_eq!(limits.debounce(), Some(Duration::from_secs(2)));
    assert_eq!(limits.key, Some(&["customer"][..]));
    assert_eq!(limits.priority, Some(&["tier"][..]));
    let input = serde_json::json!({ "customer": "c-1", "tier": 3, "cents": 5 });
    assert_eq!(limits.key_of(&input), "c-1");
    assert_eq!(limits.priority_of(&input), 3);

    let limits = &per_account.graph().limits;
    assert_eq!(limits.concurrency(), Some(2));
    assert_eq!(limits.key, Some(&["customer", "id"][..]));
    assert_eq!(limits.priority, None);
    assert!(!approve.graph().limits.any());
}

#[tokio::test]
async fn signal_methods_are_generated() {
    // No run `RunId` waits for it in this process: the value is kept for when one does, or
    // refused once delivered; either way the typed methods exist and take the signal's type.
    let run_id = nanoflow::RunId::new();
    approve
        .signal(run_id, Approval { by: "ann".into() })
        .await
        .expect("kept for the run");
    let again = approve
        .signal_approval(run_id, Approval { by: "bob".into() })
        .await;
    assert!(
        matches!(again, Err(nanoflow::SignalError::AlreadyDelivered { .. })),
        "{again:?}"
    );
    two_signals.signal_second(run_id, 7).await.unwrap();
    two_signals
        .signal_first(run_id, Approval { by: "cy".into() })
        .await
        .unwrap();
}
