//! The `RunStore` conformance suite against every store: memory and SQLite (PostgreSQL joins
//! with its store). Plus what only a store with a schema can get wrong.
#![allow(missing_docs)]

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

/// A journal written by schema 1 (before fingerprints) opens, migrates to the current schema,
/// keeps its runs, and reads them back without fingerprints: they resume as before.
#[tokio::test]
async fn a_schema_1_journal_migrates_and_keeps_its_runs() {
    let path = temp_path("old.db");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, workflow TEXT NOT NULL, status TEXT NOT NULL,
            input BLOB NOT NULL, output BLOB, error TEXT, idempotency_key TEXT,
            created_ms INTEGER NOT NULL, finished_ms INTEGER);
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
    assert_eq!(version, 2);
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
        run_id: nanoflow::RunId::new(),
        workflow: "steady",
        input: "1".into(),
        idempotency_key: None,
        fingerprint: None,
    };
    store.create_run(run.clone()).await.unwrap();
    // About 40 MiB of WAL frames, one awaited commit after another, for at least 2 s: the
    // checkpoint thread runs every 250 ms and must make the WAL start over.
    let output = axum::body::Bytes::from(vec![b'7'; 3000]);
    let started = std::time::Instant::now();
    let mut largest = 0;
    let mut i = 0u32;
    while i < 6000 || started.elapsed() < std::time::Duration::from_secs(2) {
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
        largest < 16 << 20,
        "the WAL grew to {largest} bytes over {i} commits"
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
