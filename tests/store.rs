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
