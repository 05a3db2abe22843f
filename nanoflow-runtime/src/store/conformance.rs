//! The conformance suite of [`RunStore`]: what every implementation must do, checked the same
//! way for each (`tests/store.rs` runs it on the memory and SQLite stores; a new store adds one
//! line there). Each check panics with what the store got wrong.
//!
//! Give [`check`] an empty store: the checks create runs of their own workflows
//! (`conformance_*`); one prunes the finished runs of the checks before it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;

use super::{
    Cancel, Created, Delivery, FinishWrite, NewRun, QueueSpec, Queued, Retention, RunFilter,
    RunStore, StepWrite, StoreError, WAIT_ATTEMPT,
};
use crate::id::RunId;
use crate::runs::{RunError, RunStatus};

/// Runs every check on `store`, in order.
pub async fn check(store: Arc<dyn RunStore>) {
    create_and_idempotent_claim(&*store).await;
    steps_with_their_state(&*store).await;
    steps_of_one_millisecond_in_the_order_written(&*store).await;
    finish_with_chained_runs(&*store).await;
    several_records_at_once(&*store).await;
    records_written_again_replace_the_earlier(&*store).await;
    claims_with_the_first_record(&*store).await;
    reopen_only_failed_runs(&*store).await;
    fingerprints_round_trip(&*store).await;
    blocked_runs_stay_until_acted_on(&*store).await;
    fork_records_the_run_with_its_reused_steps(&*store).await;
    list_filters_and_pages(&*store).await;
    unfinished_runs_oldest_first(&*store).await;
    concurrent_writers(store.clone()).await;
    prune_keeps_running_runs(&*store).await;
    // After the prune, whose runs sort before theirs.
    signals_and_waits(&*store).await;
    queues_and_limits(&*store).await;
    cancellation(&*store).await;
    assert!(
        store.health().is_ok(),
        "a working store reports itself healthy"
    );
}

/// Ids that sort in the order given (unlike ids made in the same millisecond), the same for
/// every call in one process.
fn id(n: u128) -> RunId {
    static BASE: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| RunId::new().as_u128() & !0xffff_ffff);
    RunId::from_u128(base | n)
}

fn new_run(run_id: RunId, workflow: &'static str, key: Option<&str>) -> NewRun {
    NewRun {
        queued: None,
        run_id,
        workflow,
        input: Bytes::from(format!(r#"{{"n":"{run_id}"}}"#)),
        idempotency_key: key.map(str::to_owned),
        fingerprint: None,
    }
}

fn step(run_id: RunId, name: &'static str, attempt: u32, output: &str) -> StepWrite {
    StepWrite {
        run_id,
        step: name.into(),
        attempt,
        outcome: Ok(Bytes::from(output.to_owned())),
        started_ms: crate::runs::now_ms(),
        duration_us: 5,
        state: None,
        fingerprint: None,
    }
}

fn finish(run_id: RunId, outcome: Result<&str, &str>, chained: Vec<NewRun>) -> FinishWrite {
    FinishWrite {
        run_id,
        outcome: outcome
            .map(|o| Bytes::from(o.to_owned()))
            .map_err(|message| RunError {
                code: "node_failed".into(),
                message: message.to_owned(),
                node: Some("pay".into()),
                step: None,
            }),
        chained,
    }
}

/// Several attempts recorded together (with the run's creation), then the last step's
/// attempt with the run's end: all land, in order.
pub async fn several_records_at_once(store: &dyn RunStore) {
    let a = id(90);
    let steps = vec![step(a, "price", 1, "1"), step(a, "tax", 1, "2")];
    store
        .record_steps(steps, Some(new_run(a, "conformance_batch", None)))
        .await
        .expect("several steps recorded");
    store
        .record_steps(Vec::new(), None)
        .await
        .expect("nothing to record is done at once");
    store
        .finish_with_steps(
            vec![step(a, "total", 1, "3")],
            finish(a, Ok("3"), Vec::new()),
            None,
        )
        .await
        .expect("the last step with the end");
    let run = store
        .get_run(a)
        .await
        .unwrap()
        .expect("the run was created");
    assert_eq!(run.status, RunStatus::Succeeded);
    let steps: Vec<&str> = run.timeline.iter().map(|s| s.step.as_str()).collect();
    for name in ["price", "tax", "total"] {
        assert!(steps.contains(&name), "{name} is missing from {steps:?}");
    }
    assert_eq!(run.completed_steps().len(), 3);
}

/// A record written again (a batch sent again after its answer was lost, a run taken over)
/// replaces the earlier one, alone or beside new records: an attempt keeps its last outcome,
/// a run created twice is one run, and the new records of the same write land.
pub async fn records_written_again_replace_the_earlier(store: &dyn RunStore) {
    let a = id(91);
    store
        .record_step(
            step(a, "price", 1, "1"),
            Some(new_run(a, "conformance_again", None)),
        )
        .await
        .expect("the first record");
    store
        .record_steps(
            vec![step(a, "price", 1, "10"), step(a, "tax", 1, "2")],
            Some(new_run(a, "conformance_again", None)),
        )
        .await
        .expect("an attempt and the run's creation written again, beside a new attempt");
    store
        .finish_with_steps(
            vec![step(a, "tax", 1, "20")],
            finish(a, Ok("20"), Vec::new()),
            None,
        )
        .await
        .expect("an attempt written again with the run's end");
    let run = store.get_run(a).await.unwrap().expect("the run");
    assert_eq!(run.status, RunStatus::Succeeded);
    let outputs: Vec<(String, u32, Option<String>)> = run
        .timeline
        .iter()
        .map(|t| {
            let out = t.output.as_ref();
            (
                t.step.clone(),
                t.attempt,
                out.map(|o| String::from_utf8_lossy(o).into_owned()),
            )
        })
        .collect();
    assert_eq!(
        outputs,
        vec![
            ("price".to_owned(), 1, Some("10".to_owned())),
            ("tax".to_owned(), 1, Some("20".to_owned())),
        ],
        "each attempt once, with its last outcome"
    );
    let listed = store
        .list_runs(RunFilter {
            workflow: Some("conformance_again".into()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "one run: {listed:?}");
}

/// A keyed creation sent with a run's first record claims the key: the run and the record
/// land together; sent again with a later record of the same run it is applied once; a claim
/// of a key another run holds writes nothing, neither the run nor its records (a queue
/// message's duplicate).
pub async fn claims_with_the_first_record(store: &dyn RunStore) {
    let wf = "conformance_claim";
    let (a, b, c, d) = (id(95), id(96), id(97), id(98));
    store
        .record_step(
            step(a, "validate", 1, "1"),
            Some(new_run(a, wf, Some("m-1"))),
        )
        .await
        .expect("the first record claims the key");
    store
        .record_steps(
            vec![step(a, "price", 1, "2")],
            Some(new_run(a, wf, Some("m-1"))),
        )
        .await
        .expect("the run's own claim, sent again, is applied once");
    let run = store.get_run(a).await.unwrap().expect("the claiming run");
    assert_eq!(run.idempotency_key.as_deref(), Some("m-1"));
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.completed_steps().len(), 2, "{:?}", run.timeline);

    let taken = store
        .record_steps(
            vec![step(b, "validate", 1, "9")],
            Some(new_run(b, wf, Some("m-1"))),
        )
        .await;
    assert_eq!(
        taken,
        Err(StoreError::KeyTaken(a)),
        "a claim of a key another run holds names that run"
    );
    let taken = store
        .finish_with_steps(
            vec![step(c, "validate", 1, "9")],
            finish(c, Ok("9"), Vec::new()),
            Some(new_run(c, wf, Some("m-1"))),
        )
        .await;
    assert_eq!(taken, Err(StoreError::KeyTaken(a)), "also with a run's end");
    for refused in [b, c] {
        assert!(
            store.get_run(refused).await.unwrap().is_none(),
            "a refused claim creates no run"
        );
        // Created now without a key: none of the refused records may have landed.
        store
            .create_run(new_run(refused, "conformance_claim_check", None))
            .await
            .unwrap();
        let run = store.get_run(refused).await.unwrap().unwrap();
        assert!(
            run.timeline.is_empty(),
            "a refused claim writes none of its records: {:?}",
            run.timeline
        );
    }
    assert_eq!(
        store
            .create_run(new_run(id(99), wf, Some("m-1")))
            .await
            .unwrap(),
        Created::Existing(a),
        "a claimed key is a key like any other"
    );
    let run = store.get_run(a).await.unwrap().unwrap();
    assert_eq!(run.completed_steps().len(), 2, "the holder is unchanged");

    store
        .finish_with_steps(
            vec![step(d, "validate", 1, "1")],
            finish(d, Ok("1"), Vec::new()),
            Some(new_run(d, wf, Some("m-2"))),
        )
        .await
        .expect("a run whose first record is its end claims its key too");
    let run = store.get_run(d).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.idempotency_key.as_deref(), Some("m-2"));

    let mut found = store
        .find_keys(wf, vec!["m-1".into(), "m-2".into(), "m-3".into()])
        .await
        .unwrap();
    found.sort();
    assert_eq!(
        found,
        [("m-1".to_owned(), a), ("m-2".to_owned(), d)],
        "the keys' holders, and no other key"
    );
    assert!(
        store
            .find_keys("conformance_claim_other", vec!["m-1".into()])
            .await
            .unwrap()
            .is_empty(),
        "keys are per workflow"
    );
}

/// A run is recorded once; a second run with the same workflow and idempotency key finds the
/// first; the same key on another workflow is another run.
pub async fn create_and_idempotent_claim(store: &dyn RunStore) {
    let a = id(1);
    let created = store.create_run(new_run(a, "conformance_create", Some("k-1")));
    assert_eq!(created.await.unwrap(), Created::New);
    let again = store.create_run(new_run(id(2), "conformance_create", Some("k-1")));
    assert_eq!(
        again.await.unwrap(),
        Created::Existing(a),
        "a repeated idempotency key must find the first run"
    );
    let other = store.create_run(new_run(id(3), "conformance_create_other", Some("k-1")));
    assert_eq!(other.await.unwrap(), Created::New, "keys are per workflow");
    let run = store.get_run(a).await.unwrap().expect("the created run");
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.idempotency_key.as_deref(), Some("k-1"));
    assert_eq!(run.workflow, "conformance_create");
    assert!(
        store.get_run(id(2)).await.unwrap().is_none(),
        "the refused duplicate must not exist"
    );
}

/// A step record creates its pending run first; a state travels with its step; a record of
/// the same step and attempt replaces the earlier one; the timeline is in order.
pub async fn steps_with_their_state(store: &dyn RunStore) {
    let r = id(10);
    let mut first = step(r, "charge", 1, "1");
    first.outcome = Err(serde_json::json!({"kind": "retryable", "message": "down"}));
    store
        .record_step(first, Some(new_run(r, "conformance_steps", None)))
        .await
        .expect("a step record with its run");
    let mut second = step(r, "charge", 2, "42");
    second.state = Some(("conformance_counter", "ada".into(), Bytes::from("7")));
    second.started_ms += 1;
    store.record_step(second, None).await.unwrap();
    let mut third = step(r, "notify", 1, "\"sent\"");
    third.started_ms += 2;
    store.record_step(third.clone(), None).await.unwrap();
    third.outcome = Ok(Bytes::from("\"sent again\""));
    store.record_step(third, None).await.unwrap();

    let run = store
        .get_run(r)
        .await
        .unwrap()
        .expect("created by its first step");
    let shape: Vec<(&str, u32, &str)> = run
        .timeline
        .iter()
        .map(|a| (a.step.as_str(), a.attempt, a.status))
        .collect();
    assert_eq!(
        shape,
        [
            ("charge", 1, "failed"),
            ("charge", 2, "succeeded"),
            ("notify", 1, "succeeded")
        ]
    );
    assert_eq!(run.timeline[0].error.as_ref().unwrap()["message"], "down");
    assert_eq!(
        run.timeline[2].output.as_deref(),
        Some(&b"\"sent again\""[..])
    );
    let completed = run.completed_steps();
    assert_eq!(completed.len(), 2, "{completed:?}");
    let state = store.get_state("conformance_counter", "ada".into()).await;
    assert_eq!(state.unwrap().as_deref(), Some(&b"7"[..]));
    assert_eq!(
        store
            .get_state("conformance_counter", "bob".into())
            .await
            .unwrap(),
        None
    );
}

/// Steps that started within the same millisecond (a fast run: each step's record durable, then
/// the next starts) come back in the order they were written, not in name order.
pub async fn steps_of_one_millisecond_in_the_order_written(store: &dyn RunStore) {
    let r = id(15);
    let at = crate::runs::now_ms();
    let mut create = Some(new_run(r, "conformance_same_ms", None));
    for name in ["price", "charge", "receipt"] {
        let mut s = step(r, name, 1, "1");
        s.started_ms = at;
        store.record_step(s, create.take()).await.unwrap();
    }
    let run = store.get_run(r).await.unwrap().expect("the run");
    let order: Vec<&str> = run.timeline.iter().map(|a| a.step.as_str()).collect();
    assert_eq!(order, ["price", "charge", "receipt"]);
    store
        .finish(finish(r, Ok("1"), Vec::new()), None)
        .await
        .unwrap();
}

/// A success records the output and creates the chained runs in the same write; a failure
/// records the client-safe error.
pub async fn finish_with_chained_runs(store: &dyn RunStore) {
    let ok = id(20);
    let chained = new_run(id(21), "conformance_chained", Some("after:20"));
    store
        .finish(
            finish(ok, Ok("{\"total\":3}"), vec![chained.clone()]),
            Some(new_run(ok, "conformance_finish", None)),
        )
        .await
        .unwrap();
    let run = store.get_run(ok).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.output.as_deref(), Some(&b"{\"total\":3}"[..]));
    assert!(run.finished_ms.is_some());
    let next = store.get_run(chained.run_id).await.unwrap();
    assert_eq!(
        next.expect("the chained run, created with the success")
            .status,
        RunStatus::Running
    );
    // Chaining again (a resumed finish) finds the chained run by its key.
    assert_eq!(
        store
            .create_run(new_run(id(22), "conformance_chained", Some("after:20")))
            .await
            .unwrap(),
        Created::Existing(chained.run_id)
    );

    let bad = id(23);
    store
        .create_run(new_run(bad, "conformance_finish", None))
        .await
        .unwrap();
    store
        .finish(finish(bad, Err("card declined"), Vec::new()), None)
        .await
        .unwrap();
    let run = store.get_run(bad).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.expect("the failed run's error");
    assert_eq!(error["code"], "node_failed");
    assert_eq!(error["message"], "card declined");
    assert_eq!(error["node"], "pay");
}

/// Only a failed run can be reopened; reopening clears its end.
pub async fn reopen_only_failed_runs(store: &dyn RunStore) {
    let failed = id(30);
    store
        .finish(
            finish(failed, Err("boom"), Vec::new()),
            Some(new_run(failed, "conformance_reopen", None)),
        )
        .await
        .unwrap();
    assert!(store.reopen(failed).await.unwrap());
    let run = store.get_run(failed).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert!(run.error.is_none() && run.finished_ms.is_none());
    assert!(
        !store.reopen(failed).await.unwrap(),
        "a running run is not failed"
    );
    assert!(!store.reopen(id(39)).await.unwrap(), "no such run");
}

/// A run's workflow fingerprint and each step record's fingerprints are read back as written;
/// records without them read back without them.
pub async fn fingerprints_round_trip(store: &dyn RunStore) {
    use crate::fingerprint::{Fingerprint, StepPrint};
    let r = id(60);
    let mut run = new_run(r, "conformance_prints", None);
    run.fingerprint = Some(Fingerprint(0xfeed_0000_0000_0001));
    store.create_run(run).await.unwrap();
    let print = StepPrint {
        output: Fingerprint(u64::MAX),
        place: Fingerprint(7),
    };
    let mut first = step(r, "price", 1, "3");
    first.fingerprint = Some(print);
    store.record_step(first, None).await.unwrap();
    let mut second = step(r, "old", 1, "4");
    second.started_ms += 1;
    store.record_step(second, None).await.unwrap();
    let run = store.get_run(r).await.unwrap().unwrap();
    assert_eq!(run.fingerprint, Some(Fingerprint(0xfeed_0000_0000_0001)));
    assert_eq!(run.timeline[0].fingerprint, Some(print));
    assert_eq!(run.timeline[1].fingerprint, None);
    assert_eq!(
        run.completed_prints(),
        [("price", Some(print)), ("old", None)]
    );
}

/// A run finished with a `graph_changed` error is `blocked`: listed by that status, not
/// resumed at start (nor pruned: see [`prune_keeps_running_runs`]); `reopen` resumes it with its records, `reset` without them;
/// a cancel (a failed finish) ends it.
pub async fn blocked_runs_stay_until_acted_on(store: &dyn RunStore) {
    let r = id(70);
    store
        .record_step(
            step(r, "price", 1, "3"),
            Some(new_run(r, "conformance_blocked", None)),
        )
        .await
        .unwrap();
    let parked = RunError {
        code: "graph_changed".into(),
        message: "the output type of step `price` changed".into(),
        node: None,
        step: Some("price".into()),
    };
    store
        .finish(
            FinishWrite {
                run_id: r,
                outcome: Err(parked),
                chained: Vec::new(),
            },
            None,
        )
        .await
        .unwrap();
    let run = store.get_run(r).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Blocked);
    let error = run.error.expect("the blocked run's error");
    assert_eq!(
        (&error["code"], &error["step"]),
        (&"graph_changed".into(), &"price".into())
    );
    let listed = store
        .list_runs(RunFilter {
            status: Some(RunStatus::Blocked),
            workflow: Some("conformance_blocked".into()),
            limit: 10,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|r| r.run_id).collect::<Vec<_>>(), [r]);
    assert!(
        !store
            .unfinished_runs()
            .await
            .unwrap()
            .iter()
            .any(|u| u.run_id == r),
        "a blocked run is not resumed at start"
    );
    // Reopened, it keeps its records; blocked again, reset drops them.
    assert!(store.reopen(r).await.unwrap());
    let run = store.get_run(r).await.unwrap().unwrap();
    assert_eq!((run.status, run.timeline.len()), (RunStatus::Running, 1));
    assert!(
        !store.reset(r, None).await.unwrap(),
        "a running run is neither failed nor blocked"
    );
    store
        .finish(
            FinishWrite {
                run_id: r,
                outcome: Err(RunError {
                    code: "graph_changed".into(),
                    message: "again".into(),
                    node: None,
                    step: Some("price".into()),
                }),
                chained: Vec::new(),
            },
            None,
        )
        .await
        .unwrap();
    let fresh = crate::fingerprint::Fingerprint(99);
    assert!(store.reset(r, Some(fresh)).await.unwrap());
    let run = store.get_run(r).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert!(run.timeline.is_empty(), "{:?}", run.timeline);
    assert!(run.error.is_none() && run.finished_ms.is_none());
    assert_eq!(run.fingerprint, Some(fresh));
    assert!(!store.reset(id(79), None).await.unwrap(), "no such run");
    // A cancel is a failed finish.
    store
        .finish(finish(r, Err("cancelled"), Vec::new()), None)
        .await
        .unwrap();
    assert_eq!(
        store.get_run(r).await.unwrap().unwrap().status,
        RunStatus::Failed
    );
}

/// A fork is recorded with its link and the step records it reuses, in one write.
pub async fn fork_records_the_run_with_its_reused_steps(store: &dyn RunStore) {
    let original = id(80);
    store
        .record_step(
            step(original, "price", 1, "3"),
            Some(new_run(original, "conformance_fork", None)),
        )
        .await
        .unwrap();
    let forked = id(81);
    let mut reused = step(forked, "price", 1, "3");
    reused.fingerprint = Some(crate::fingerprint::StepPrint {
        output: crate::fingerprint::Fingerprint(1),
        place: crate::fingerprint::Fingerprint(2),
    });
    store
        .fork(
            new_run(forked, "conformance_fork", None),
            original,
            vec![reused.clone()],
        )
        .await
        .expect("a fork");
    let run = store
        .get_run(forked)
        .await
        .unwrap()
        .expect("the forked run");
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.forked_from, Some(original));
    assert_eq!(
        run.completed_steps(),
        [("price".to_owned(), Bytes::from("3"))]
    );
    assert_eq!(run.timeline[0].fingerprint, reused.fingerprint);
    let first = store.get_run(original).await.unwrap().unwrap();
    assert_eq!(first.forked_from, None);
    assert!(
        store
            .unfinished_runs()
            .await
            .unwrap()
            .iter()
            .any(|r| r.run_id == forked),
        "a fork is a running run"
    );
}

/// Newest first, filtered by workflow, status and search, in pages by `before`.
pub async fn list_filters_and_pages(store: &dyn RunStore) {
    let ids: Vec<RunId> = (40..45).map(id).collect();
    for (i, r) in ids.iter().enumerate() {
        let key = format!("list-key-{i}");
        store
            .create_run(new_run(*r, "conformance_list", Some(&key)))
            .await
            .unwrap();
    }
    store
        .finish(finish(ids[1], Ok("1"), Vec::new()), None)
        .await
        .unwrap();
    let filter = |before: Option<RunId>, limit: usize| RunFilter {
        workflow: Some("conformance_list".into()),
        status: None,
        before,
        limit,
        search: None,
    };
    let page = store.list_runs(filter(None, 2)).await.unwrap();
    let got: Vec<RunId> = page.iter().map(|r| r.run_id).collect();
    assert_eq!(got, [ids[4], ids[3]], "newest first, at most `limit`");
    assert!(
        page.iter().all(|r| r.timeline.is_empty()),
        "lists carry no timelines"
    );
    let next = store.list_runs(filter(Some(ids[3]), 2)).await.unwrap();
    let got: Vec<RunId> = next.iter().map(|r| r.run_id).collect();
    assert_eq!(
        got,
        [ids[2], ids[1]],
        "`before` continues after the last id"
    );
    let done = store
        .list_runs(RunFilter {
            status: Some(RunStatus::Succeeded),
            ..filter(None, 10)
        })
        .await
        .unwrap();
    assert_eq!(done.iter().map(|r| r.run_id).collect::<Vec<_>>(), [ids[1]]);
    let found = store
        .list_runs(RunFilter {
            search: Some("list-key-3".into()),
            ..filter(None, 10)
        })
        .await
        .unwrap();
    assert_eq!(found.iter().map(|r| r.run_id).collect::<Vec<_>>(), [ids[3]]);
    let prefix = ids[0].to_string()[..30].to_owned();
    let by_id = store
        .list_runs(RunFilter {
            search: Some(prefix),
            ..filter(None, 10)
        })
        .await
        .unwrap();
    assert!(
        by_id.iter().any(|r| r.run_id == ids[0]),
        "an id prefix finds the run"
    );
}

/// Running runs with their timelines, oldest first: what a restart resumes.
pub async fn unfinished_runs_oldest_first(store: &dyn RunStore) {
    let all = store.unfinished_runs().await.unwrap();
    assert!(
        all.iter().all(|r| r.status == RunStatus::Running),
        "only running runs"
    );
    assert!(
        all.windows(2).all(|w| w[0].run_id < w[1].run_id),
        "oldest first"
    );
    let steps = all
        .iter()
        .find(|r| r.run_id == id(10))
        .expect("the running run of `steps_with_their_state`");
    assert_eq!(steps.timeline.len(), 3, "with its timeline");
}

/// Records from many tasks at once all land.
pub async fn concurrent_writers(store: Arc<dyn RunStore>) {
    let mut tasks = Vec::new();
    for t in 0..8u128 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let r = id(100 + t);
            store
                .create_run(new_run(r, "conformance_concurrent", None))
                .await
                .unwrap();
            let commits: Vec<_> = (0..25u32)
                .map(|i| {
                    let mut s = step(r, "tick", i + 1, "0");
                    s.started_ms += u64::from(i);
                    store.record_step(s, None)
                })
                .collect();
            for c in commits {
                c.await.unwrap();
            }
            r
        }));
    }
    for task in tasks {
        let r = task.await.unwrap();
        let run = store.get_run(r).await.unwrap().unwrap();
        assert_eq!(run.timeline.len(), 25, "every concurrent record landed");
    }
}

/// Pruning removes finished runs past the age or beyond the count, never a running one.
pub async fn prune_keeps_running_runs(store: &dyn RunStore) {
    let keep_running = id(200);
    store
        .create_run(new_run(keep_running, "conformance_prune", None))
        .await
        .unwrap();
    let keep_blocked = id(199);
    store
        .finish(
            FinishWrite {
                run_id: keep_blocked,
                outcome: Err(RunError {
                    code: "graph_changed".into(),
                    message: "step `a` was removed".into(),
                    node: None,
                    step: Some("a".into()),
                }),
                chained: Vec::new(),
            },
            Some(new_run(keep_blocked, "conformance_prune", None)),
        )
        .await
        .unwrap();
    for n in 201..204 {
        store
            .finish(
                finish(id(n), Ok("0"), Vec::new()),
                Some(new_run(id(n), "conformance_prune", None)),
            )
            .await
            .unwrap();
    }
    // Keep the newest finished run only.
    let removed = store
        .prune(Retention {
            max_age: Duration::from_secs(3600),
            max_runs: 1,
        })
        .await
        .unwrap();
    assert!(removed >= 2, "removed {removed}");
    assert!(
        store.get_run(id(203)).await.unwrap().is_some(),
        "the newest stays"
    );
    assert!(store.get_run(id(201)).await.unwrap().is_none());
    assert!(store.get_run(keep_running).await.unwrap().is_some());
    // Everything finished is older than zero seconds... once a millisecond has passed.
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .prune(Retention {
            max_age: Duration::ZERO,
            max_runs: u64::MAX,
        })
        .await
        .unwrap();
    assert!(store.get_run(id(203)).await.unwrap().is_none());
    let running = store.get_run(keep_running).await.unwrap();
    assert_eq!(running.map(|r| r.status), Some(RunStatus::Running));
    let blocked = store.get_run(keep_blocked).await.unwrap();
    assert_eq!(
        blocked.map(|r| r.status),
        Some(RunStatus::Blocked),
        "a blocked run stays until acted on"
    );
}

fn queued_run(
    run_id: RunId,
    workflow: &'static str,
    key: &str,
    priority: i64,
    due_ms: u64,
) -> NewRun {
    NewRun {
        queued: Some(Queued {
            key: key.to_owned(),
            priority,
            due_ms,
        }),
        ..new_run(run_id, workflow, None)
    }
}

/// Signals are recorded once (a signal and a timeout race: one wins), a run waits unless its
/// signal is there already, a due run wakes, and a delivery wakes a waiting run.
pub async fn signals_and_waits(store: &dyn RunStore) {
    let now = crate::runs::now_ms();
    let (a, b) = (id(9001), id(9002));
    store
        .create_run(new_run(a, "conformance_signals", None))
        .await
        .unwrap();
    let kept = store
        .deliver(step(a, "approval", 1, r#"{"signal":1}"#))
        .await
        .unwrap();
    assert!(
        matches!(kept, Delivery::Kept),
        "a running run keeps a signal: {kept:?}"
    );
    let twice = store
        .deliver(step(a, "approval", 1, r#"{"signal":2}"#))
        .await
        .unwrap();
    assert!(matches!(twice, Delivery::AlreadyDelivered), "{twice:?}");
    assert!(
        !store.suspend(a, "approval".into(), None).await.unwrap(),
        "a run whose signal arrived does not wait for it"
    );
    let run = store.get_run(a).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(
        run.completed_steps(),
        vec![("approval".to_owned(), Bytes::from(r#"{"signal":1}"#))]
    );

    store
        .create_run(new_run(b, "conformance_signals", None))
        .await
        .unwrap();
    store
        .record_step(step(b, "approval", WAIT_ATTEMPT, r#"{"until_ms":1}"#), None)
        .await
        .unwrap();
    assert!(store
        .suspend(b, "approval".into(), Some(now - 1))
        .await
        .unwrap());
    let run = store.get_run(b).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Waiting);
    assert_eq!(run.due_ms, Some(now - 1));
    assert_eq!(run.timeline[0].status, "waiting", "{:?}", run.timeline);
    assert_eq!(run.waits().get("approval"), Some(&Some(1)));
    assert!(
        run.completed_steps().is_empty(),
        "a wait is not a step's value"
    );
    let listed = store
        .list_runs(RunFilter {
            workflow: Some("conformance_signals".into()),
            status: Some(RunStatus::Waiting),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);

    let woken = store.wake_due(now, 100).await.unwrap();
    assert!(woken.iter().any(|r| r.run_id == b), "a due run wakes");
    let run = store.get_run(b).await.unwrap().unwrap();
    assert_eq!((run.status, run.due_ms), (RunStatus::Running, None));
    assert!(
        store
            .wake_due(now, 100)
            .await
            .unwrap()
            .iter()
            .all(|r| r.run_id != b),
        "a woken run is taken once"
    );

    // Waiting for a signal only: not due; a delivery wakes it with its timeline.
    assert!(store.suspend(b, "approval".into(), None).await.unwrap());
    assert!(store
        .wake_due(now + 1_000_000, 100)
        .await
        .unwrap()
        .iter()
        .all(|r| r.run_id != b));
    match store
        .deliver(step(b, "approval", 1, r#"{"signal":true}"#))
        .await
        .unwrap()
    {
        Delivery::Woken(run) => {
            assert_eq!(run.run_id, b);
            assert_eq!(run.status, RunStatus::Running);
            assert_eq!(run.completed_steps().len(), 1, "{:?}", run.timeline);
        }
        other => panic!("a waiting run is woken by its signal: {other:?}"),
    }
    store
        .finish(finish(b, Ok("1"), Vec::new()), None)
        .await
        .unwrap();
    let ended = store.deliver(step(b, "other", 1, "{}")).await.unwrap();
    assert!(
        matches!(ended, Delivery::Finished(RunStatus::Succeeded)),
        "{ended:?}"
    );
    let unknown = store
        .deliver(step(id(9099), "approval", 1, "{}"))
        .await
        .unwrap();
    assert!(matches!(unknown, Delivery::UnknownRun), "{unknown:?}");
}

/// Queued runs start in order of priority then arrival, per key, as concurrency, rates and
/// due times allow; debounce replaces a key's queued runs.
pub async fn queues_and_limits(store: &dyn RunStore) {
    let now = crate::runs::now_ms();
    let w = "conformance_queue";
    let one = QueueSpec {
        concurrency: Some(1),
        rate: None,
    };
    for (n, key) in [(9101, "k"), (9102, "k"), (9103, "j"), (9104, "k")] {
        store
            .create_run(queued_run(id(n), w, key, 0, now))
            .await
            .unwrap();
    }
    assert_eq!(
        store.get_run(id(9101)).await.unwrap().unwrap().status,
        RunStatus::Queued
    );
    let started: Vec<RunId> = store
        .start_queued(w, one, now, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(
        started,
        vec![id(9101), id(9103)],
        "one per key, in arrival order"
    );
    assert!(
        store
            .start_queued(w, one, now, 10)
            .await
            .unwrap()
            .is_empty(),
        "slots are full"
    );
    // A higher priority goes before earlier arrivals of its key.
    store
        .create_run(queued_run(id(9105), w, "k", 5, now))
        .await
        .unwrap();
    store
        .finish(finish(id(9101), Ok("1"), Vec::new()), None)
        .await
        .unwrap();
    let next = store.start_queued(w, one, now, 10).await.unwrap();
    assert_eq!(
        next.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        vec![id(9105)]
    );
    assert_eq!(next[0].status, RunStatus::Running);
    assert_eq!(
        &next[0].input[..],
        format!(r#"{{"n":"{}"}}"#, id(9105)).as_bytes()
    );
    // A waiting run holds its slot.
    assert!(store.suspend(id(9105), "s".into(), None).await.unwrap());
    store
        .finish(finish(id(9103), Ok("1"), Vec::new()), None)
        .await
        .unwrap();
    assert!(store
        .start_queued(w, one, now, 10)
        .await
        .unwrap()
        .is_empty());

    // A rate: two per minute.
    let r = "conformance_rate";
    for n in 9111..9114 {
        store
            .create_run(queued_run(id(n), r, "", 0, now))
            .await
            .unwrap();
    }
    let rate = QueueSpec {
        concurrency: None,
        rate: Some((2, 60_000)),
    };
    assert_eq!(store.start_queued(r, rate, now, 10).await.unwrap().len(), 2);
    assert!(store
        .start_queued(r, rate, now + 1, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .start_queued(r, rate, now + 60_001, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // Not before its due time; a newer run of the key replaces it.
    let d = "conformance_debounce";
    store
        .create_run(queued_run(id(9121), d, "c", 0, now + 60_000))
        .await
        .unwrap();
    store
        .create_run(queued_run(id(9122), d, "c", 0, now + 60_000))
        .await
        .unwrap();
    store
        .create_run(queued_run(id(9123), d, "e", 0, now + 60_000))
        .await
        .unwrap();
    assert!(store
        .start_queued(d, QueueSpec::default(), now, 10)
        .await
        .unwrap()
        .is_empty());
    let replaced = store.supersede(d, "c".into(), id(9122)).await.unwrap();
    assert_eq!(replaced, vec![id(9121)]);
    let old = store.get_run(id(9121)).await.unwrap().unwrap();
    assert_eq!(old.status, RunStatus::Cancelled);
    assert_eq!(old.error.unwrap()["code"], "debounced");
    let due: Vec<RunId> = store
        .start_queued(d, QueueSpec::default(), now + 60_000, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(due, vec![id(9122), id(9123)]);
}

/// Cancelling: a queued run ends at once, a waiting run is handed back running (to run its
/// compensations), a running one is left to its runner, an ended one is untouched.
pub async fn cancellation(store: &dyn RunStore) {
    let now = crate::runs::now_ms();
    let w = "conformance_cancel";
    store
        .create_run(queued_run(id(9201), w, "", 0, now))
        .await
        .unwrap();
    assert!(matches!(
        store.cancel(id(9201)).await.unwrap(),
        Cancel::Ended
    ));
    let run = store.get_run(id(9201)).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert!(run.finished_ms.is_some());
    assert!(store
        .start_queued(w, QueueSpec::default(), now, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        store.cancel(id(9201)).await.unwrap(),
        Cancel::Finished(RunStatus::Cancelled)
    ));

    store.create_run(new_run(id(9202), w, None)).await.unwrap();
    assert!(matches!(
        store.cancel(id(9202)).await.unwrap(),
        Cancel::Running
    ));
    assert!(store.suspend(id(9202), "go".into(), None).await.unwrap());
    match store.cancel(id(9202)).await.unwrap() {
        Cancel::Woken(run) => assert_eq!(run.status, RunStatus::Running),
        other => panic!("a waiting run is handed back to compensate: {other:?}"),
    }
    store
        .finish(
            FinishWrite {
                run_id: id(9202),
                outcome: Err(RunError::cancelled()),
                chained: Vec::new(),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_run(id(9202)).await.unwrap().unwrap().status,
        RunStatus::Cancelled
    );
    assert!(matches!(
        store.cancel(id(9299)).await.unwrap(),
        Cancel::UnknownRun
    ));
}
