//! Keyed state of stateful nodes outside the journal (in-process runs, `--journal off`), and
//! the per-key locks that serialize runs touching the same key: one [`KeyedState`] per runner;
//! in-process runs outside any runner (`Workflow::run`) share the process's.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use axum::body::Bytes;

type Key = (&'static str, String);

/// The keys' locks and (without a journal) their values.
#[derive(Debug, Default)]
pub(crate) struct KeyedState {
    locks: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    memory: Mutex<HashMap<Key, Bytes>>,
}

impl KeyedState {
    /// The state of in-process runs started outside a runner.
    pub(crate) fn process() -> Arc<KeyedState> {
        static PROCESS: LazyLock<Arc<KeyedState>> = LazyLock::new(Default::default);
        PROCESS.clone()
    }

    /// The lock of one node's key. Entries nobody holds are dropped as new keys arrive, so the
    /// map stays as large as the keys in use.
    pub(crate) fn key_lock(&self, node: &'static str, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.len() > 1024 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry((node, key.to_owned())).or_default().clone()
    }

    pub(crate) fn get(&self, node: &'static str, key: &str) -> Option<Bytes> {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(node, key.to_owned()))
            .cloned()
    }

    pub(crate) fn set(&self, node: &'static str, key: &str, value: Bytes) {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((node, key.to_owned()), value);
    }
}
