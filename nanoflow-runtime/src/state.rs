//! Keyed state of stateful nodes outside the journal (in-process runs, `--journal off`), and
//! the per-key locks that serialize runs touching the same key.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use axum::body::Bytes;

type Key = (&'static str, String);

static LOCKS: LazyLock<Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);
static MEMORY: LazyLock<Mutex<HashMap<Key, Bytes>>> = LazyLock::new(Default::default);

/// The lock of one node's key. Entries nobody holds are dropped as new keys arrive, so the map
/// stays as large as the keys in use.
pub(crate) fn key_lock(node: &'static str, key: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    if locks.len() > 1024 {
        locks.retain(|_, l| Arc::strong_count(l) > 1);
    }
    locks.entry((node, key.to_owned())).or_default().clone()
}

pub(crate) fn memory_get(node: &'static str, key: &str) -> Option<Bytes> {
    MEMORY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(node, key.to_owned()))
        .cloned()
}

pub(crate) fn memory_set(node: &'static str, key: &str, value: Bytes) {
    MEMORY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((node, key.to_owned()), value);
}
