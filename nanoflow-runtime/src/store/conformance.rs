//! The conformance suite of [`RunStore`]: what every implementation must do, checked the same
//! way for each (`tests/store.rs` runs it on the memory and SQLite stores; a new store adds one
//! line there). Each check panics with what the store got wrong.
//!
//! Give [`check`] an empty store: the checks create runs of their own workflows
//! (`conformance_*`), and the last one prunes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;

use super::{Created, FinishWrite, NewRun, Retention, RunFilter, RunStore, StepWrite};
use crate::id::RunId;
use crate::runs::{RunError, RunStatus};

/// Runs every check on `store`, in order.
pub async fn check(store: Arc<dyn RunStore>) {
    create_and_idempotent_claim(&*store).await;
    steps_with_their_state(&*store).await;
    finish_with_chained_runs(&*store).await;
    several_records_at_once(&*store).await;
    reopen_only_failed_runs(&*store).await;
    fingerprints_round_trip(&*store).await;
    blocked_runs_stay_until_acted_on(&*store).await;
    fork_records_the_run_with_its_reused_steps(&*store).await;
    list_filters_and_pages(&*store).await;
    unfinished_runs_oldest_first(&*store).await;
    concurrent_writers(store.clone()).await;
    prune_keeps_running_runs(&*store).await;
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
