//! The `RunStore` conformance suite against every store: memory, SQLite and PostgreSQL (a real
//! server, `NANOFLOW_DATABASE_URL`, a database per test). Plus what only a store with a schema
//! can get wrong, and the PostgreSQL store's ownership: leases, takeover and fencing.
#![allow(missing_docs)]

#[cfg(feature = "postgres")]
#[path = "support/services.rs"]
mod services;

use std::sync::Arc;

use nanoflow::store::{conformance, memory::MemoryStore, sqlite::SqliteStore, RunStore};

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir()
        .join(format!("nanoflow-store-{}", nanoflow::RunId::new()))
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_conforms() {
    conformance::check(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_memory_store_conforms_and_forgets_the_oldest_finished_runs() {
    conformance::check(Arc::new(MemoryStore::bounded(1_000))).await;

    use nanoflow::journal::{FinishWrite, NewRun};
    let store = MemoryStore::bounded(2);
    let new = |key: Option<&str>| NewRun {
        queued: None,
        run_id: nanoflow::RunId::new(),
        workflow: "bounded",
        input: "1".into(),
        idempotency_key: key.map(str::to_owned),
        fingerprint: None,
    };
    let running = new(None);
    store.create_run(running.clone()).await.unwrap();
    let mut finished = Vec::new();
    for i in 0..4 {
        let run = new(Some(&format!("k{i}")));
        let id = run.run_id;
        store.create_run(run).await.unwrap();
        let write = FinishWrite {
            run_id: id,
            outcome: Ok("2".into()),
            chained: Vec::new(),
        };
        store.finish(write, None).await.unwrap();
        finished.push(id);
    }
    // The two newest finished runs and the running one are kept.
    for (i, id) in finished.iter().enumerate() {
        assert_eq!(
            store.get_run(*id).await.unwrap().is_some(),
            i >= 2,
            "run {i}"
        );
    }
    assert!(store.get_run(running.run_id).await.unwrap().is_some());
    // A forgotten run's key is free again; a kept one's still answers with its run.
    let again = new(Some("k0"));
    assert_eq!(
        store.create_run(again).await.unwrap(),
        nanoflow::journal::Created::New
    );
    assert_eq!(
        store.create_run(new(Some("k3"))).await.unwrap(),
        nanoflow::journal::Created::Existing(finished[3])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_measured_store_conforms_and_counts_its_writes() {
    let path = temp_path("journal.db");
    let journal = nanoflow::journal::Journal::open(&path).unwrap();
    let store: Arc<dyn RunStore> = Arc::new(nanoflow::store::metered::Metered::new(Arc::new(
        SqliteStore::open(&path.with_file_name("other.db")).unwrap(),
    )));
    conformance::check(store.clone()).await;
    assert!(store.transactions() > 0);
    // `Journal::open` measures its store: its transactions are the SQLite store's.
    let before = journal.transactions();
    journal
        .create_run(nanoflow::journal::NewRun {
            queued: None,
            run_id: nanoflow::RunId::new(),
            workflow: "measured",
            input: "1".into(),
            idempotency_key: None,
            fingerprint: None,
        })
        .await
        .unwrap();
    assert_eq!(journal.transactions(), before + 1);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_conforms() {
    let path = temp_path("journal.db");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(&path).unwrap());
    assert!(store.durable());
    conformance::check(store).await;
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn the_sqlite_store_keeps_records_across_reopening_and_refuses_newer_schemas() {
    let path = temp_path("journal.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        let run = nanoflow::journal::NewRun {
            queued: None,
            run_id: nanoflow::RunId::new(),
            workflow: "reopened",
            input: "1".into(),
            idempotency_key: Some("k".into()),
            fingerprint: None,
        };
        store.create_run(run).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let unfinished = store.unfinished_runs().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].workflow, "reopened");
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("newer nanoflow") && err.contains("99"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// A journal written by schema 1 (before fingerprints) opens, migrates to the current schema
/// (its indexes too), keeps its runs, and reads them back without fingerprints: they resume as
/// before.
#[tokio::test]
async fn a_schema_1_journal_migrates_and_keeps_its_runs() {
    let path = temp_path("old.db");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, workflow TEXT NOT NULL, status TEXT NOT NULL,
            input BLOB NOT NULL, output BLOB, error TEXT, idempotency_key TEXT,
            created_ms INTEGER NOT NULL, finished_ms INTEGER);
         CREATE INDEX runs_status ON runs(status, id);
         CREATE INDEX runs_workflow_status ON runs(workflow, status, id);
         CREATE TABLE steps (run_id TEXT NOT NULL, step TEXT NOT NULL, attempt INTEGER NOT NULL,
            status TEXT NOT NULL, output BLOB, error TEXT, started_ms INTEGER NOT NULL,
            duration_us INTEGER NOT NULL, PRIMARY KEY (run_id, step, attempt)) WITHOUT ROWID;
         CREATE TABLE state (node TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
            PRIMARY KEY (node, key)) WITHOUT ROWID;
         PRAGMA user_version = 1;",
    )
    .unwrap();
    let id = nanoflow::RunId::new();
    conn.execute(
        "INSERT INTO runs (id, workflow, status, input, created_ms) VALUES (?1, 'old', 'running', CAST('1' AS BLOB), 5)",
        [id.to_string()],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO steps VALUES (?1, 'price', 1, 'succeeded', CAST('3' AS BLOB), NULL, 6, 7)",
        [id.to_string()],
    )
    .unwrap();
    drop(conn);

    let store = SqliteStore::open(&path).unwrap();
    let run = store.get_run(id).await.unwrap().expect("the old run");
    assert_eq!(run.fingerprint, None);
    assert_eq!(run.timeline.len(), 1);
    assert_eq!(run.timeline[0].fingerprint, None);
    assert_eq!(run.completed_prints(), [("price", None)]);
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 5);
    // Schema 5: runs are indexed by status only while they have not succeeded.
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs' AND sql IS NOT NULL ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        indexes,
        [
            "runs_due",
            "runs_idempotency",
            "runs_limited",
            "runs_not_succeeded",
            "runs_workflow"
        ],
    );
    drop(conn);
    // Reopening a migrated journal changes nothing.
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.unfinished_runs().await.unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_wal_starts_over_under_steady_writes() {
    use nanoflow::journal::{NewRun, StepWrite};
    let path = temp_path("journal.db");
    let store = SqliteStore::open(&path).unwrap();
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    let run = NewRun {
        queued: None,
        run_id: nanoflow::RunId::new(),
        workflow: "steady",
        input: "1".into(),
        idempotency_key: None,
        fingerprint: None,
    };
    store.create_run(run.clone()).await.unwrap();
    // At least 100 MiB of WAL frames (each commit writes whole 4 KiB pages), one awaited
    // commit after another, for at least 2 s: the checkpoint thread runs every 250 ms and must
    // make the WAL start over, so that it stays well under what was written (a WAL that never
    // starts over holds all of it).
    let output = axum::body::Bytes::from(vec![b'7'; 3000]);
    let started = std::time::Instant::now();
    let mut largest = 0;
    let mut i = 0u32;
    while i < 9000 || started.elapsed() < std::time::Duration::from_secs(2) {
        let write = StepWrite {
            run_id: run.run_id,
            step: format!("step{i}").into(),
            attempt: 1,
            outcome: Ok(output.clone()),
            started_ms: 0,
            duration_us: 1,
            state: None,
            fingerprint: None,
        };
        store.record_step(write, None).await.unwrap();
        largest = largest.max(std::fs::metadata(&wal).unwrap().len());
        i += 1;
    }
    assert!(
        largest < 48 << 20,
        "the WAL grew to {largest} bytes over {i} commits"
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::sync::Arc;
    use std::time::Duration;

    use nanoflow::journal::{NewRun, StepWrite};
    use nanoflow::store::postgres::{Ownership, PostgresStore};
    use nanoflow::store::{conformance, RunStore, StoreError};

    use super::services;

    fn ownership(runner_id: &str, lease: Duration) -> Ownership {
        Ownership {
            runner_id: runner_id.to_owned(),
            lease,
        }
    }

    async fn open(url: &str, runner_id: &str, lease: Duration) -> PostgresStore {
        let url = url.to_owned();
        let o = ownership(runner_id, lease);
        tokio::task::spawn_blocking(move || PostgresStore::open(&url, o))
            .await
            .unwrap()
            .unwrap()
    }

    fn step(run_id: nanoflow::RunId, name: &'static str, output: &str) -> StepWrite {
        StepWrite {
            run_id,
            step: name.into(),
            attempt: 1,
            outcome: Ok(output.to_owned().into()),
            started_ms: 1,
            duration_us: 1,
            state: None,
            fingerprint: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_postgres_store_conforms() {
        let Some(server) = services::postgres() else {
            return;
        };
        let url = services::fresh_database(&server).await;
        let store: Arc<dyn RunStore> =
            Arc::new(open(&url, "conformance", Duration::from_secs(10)).await);
        assert!(store.durable() && store.shared());
        conformance::check(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_postgres_store_keeps_records_across_reopening_and_refuses_newer_schemas() {
        let Some(server) = services::postgres() else {
            return;
        };
        let url = services::fresh_database(&server).await;
        let run_id = nanoflow::RunId::new();
        {
            let store = open(&url, "first", Duration::from_secs(10)).await;
            let run = NewRun {
                queued: None,
                run_id,
                workflow: "reopened",
                input: "1".into(),
                idempotency_key: Some("k".into()),
                fingerprint: None,
            };
            store.create_run(run).await.unwrap();
        }
        let store = open(&url, "second", Duration::from_secs(10)).await;
        let unfinished = store.unfinished_runs().await.unwrap();
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].run_id, run_id);
        drop(store);
        let db = services::connect_db(&url).await;
        db.batch_execute(
            "UPDATE nanoflow_journal.meta SET value = 99 WHERE key = 'schema_version'",
        )
        .await
        .unwrap();
        let o = ownership("third", Duration::from_secs(10));
        let err = tokio::task::spawn_blocking(move || PostgresStore::open(&url, o))
            .await
            .unwrap()
            .unwrap_err();
        match &err {
            StoreError::Unusable(why) => {
                assert!(
                    why.contains("newer nanoflow") && why.contains("99"),
                    "{why}"
                )
            }
            other => panic!("a newer schema must be unusable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_unreachable_database_is_named_without_its_password() {
        // Port 1 on loopback: nothing listens there.
        let o = ownership("unreachable", Duration::from_secs(10));
        let err = tokio::task::spawn_blocking(move || {
            PostgresStore::open("postgres://app:hunter2-secret@127.0.0.1:1/shop", o)
        })
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
        assert!(err.contains("postgres://app:***@127.0.0.1:1/shop"), "{err}");
        assert!(err.contains("cannot connect"), "{err}");
        assert!(!err.contains("hunter2"), "the password leaked: {err}");
    }

    /// Runner `a` stalls (its lease lapses, simulated by moving its lease into the past); `b`
    /// claims its running run under a new epoch; `a` cannot write it any more, `b` can.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_runner_whose_lease_lapsed_is_fenced_out_of_its_runs() {
        let Some(server) = services::postgres() else {
            return;
        };
        let url = services::fresh_database(&server).await;
        // Long leases: the heartbeats do not renew them during the test.
        let a = open(&url, "runner-a", Duration::from_secs(60)).await;
        let b = open(&url, "runner-b", Duration::from_secs(60)).await;
        let run_id = nanoflow::RunId::new();
        let run = NewRun {
            queued: None,
            run_id,
            workflow: "fenced",
            input: "{}".into(),
            idempotency_key: None,
            fingerprint: None,
        };
        a.record_step(step(run_id, "first", "1"), Some(run))
            .await
            .unwrap();
        assert!(a.owns(run_id));
        assert!(
            b.claim_orphans(10).await.unwrap().is_empty(),
            "a live lease keeps its runs"
        );
        let db = services::connect_db(&url).await;
        db.batch_execute(
            "UPDATE nanoflow_journal.runners SET lease_until = clock_timestamp() - interval '1 second'
             WHERE runner_id = 'runner-a'",
        )
        .await
        .unwrap();
        let backlog = b
            .backlog()
            .await
            .unwrap()
            .expect("a shared store has a backlog");
        assert_eq!(backlog.unclaimed, 1);
        let claimed = b.claim_orphans(10).await.unwrap();
        assert_eq!(claimed.len(), 1, "the lapsed runner's run is taken over");
        assert_eq!(claimed[0].run_id, run_id);
        assert_eq!(claimed[0].completed_steps().len(), 1, "with its timeline");
        assert!(b.owns(run_id));
        assert!(
            b.claim_orphans(10).await.unwrap().is_empty(),
            "a run is claimed once"
        );
        assert_eq!(b.backlog().await.unwrap().unwrap().takeovers, 1);
        let refused = a.record_step(step(run_id, "second", "2"), None).await;
        let why = refused
            .expect_err("the stale owner's write must be refused")
            .to_string();
        assert!(why.contains("another runner"), "{why}");
        assert!(!a.owns(run_id), "the stale owner drops the run");
        b.record_step(step(run_id, "second", "2"), None)
            .await
            .unwrap();
        let run = b.get_run(run_id).await.unwrap().unwrap();
        let steps: Vec<&str> = run.timeline.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(steps, ["first", "second"], "each step recorded once");
    }
}
