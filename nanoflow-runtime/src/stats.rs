//! Metric primitives without I/O: counters and duration histograms, and the journal's own
//! figures. Every layer may record into them; `observability` renders them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Upper bounds of the duration histograms, in seconds (`+Inf` is implied).
pub(crate) const BOUNDS_SECONDS: [f64; 16] = [
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// How many copies of each metric there are. Each thread adds to one of them, a cache line of
/// its own, so that the runtime's threads recording at once do not pass the same line back and
/// forth (on the hot path, a run's counters and each step's histogram are recorded from both
/// worker threads; issue 16); reads add the copies up.
const SHARDS: usize = 8;

/// The copy the calling thread records into.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// A value alone on its cache lines (two, for the adjacent-line prefetch).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Line<T>(T);

/// A monotonically increasing count.
#[derive(Debug)]
pub(crate) struct Counter([Line<AtomicU64>; SHARDS]);

impl Default for Counter {
    fn default() -> Self {
        Self(std::array::from_fn(|_| Line::default()))
    }
}

impl Counter {
    pub(crate) fn inc(&self) {
        self.0[shard()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.iter().map(|l| l.0.load(Ordering::Relaxed)).sum()
    }
}

/// One copy of a histogram's figures.
#[derive(Debug)]
struct Buckets {
    counts: [AtomicU64; BOUNDS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Buckets {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// A duration histogram with fixed buckets. Buckets are stored non-cumulative and summed when
/// rendered, so the `+Inf` bucket always equals the count.
#[derive(Debug)]
pub(crate) struct Histogram([Line<Buckets>; SHARDS]);

impl Default for Histogram {
    fn default() -> Self {
        Self(std::array::from_fn(|_| Line::default()))
    }
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS_SECONDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS_SECONDS.len());
        let copy = &self.0[shard()].0;
        copy.counts[i].fetch_add(1, Ordering::Relaxed);
        copy.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Observations in bucket `i` (not cumulative), over every copy.
    fn bucket(&self, i: usize) -> u64 {
        self.0
            .iter()
            .map(|l| l.0.counts[i].load(Ordering::Relaxed))
            .sum()
    }

    /// How many observations so far.
    pub(crate) fn count(&self) -> u64 {
        (0..=BOUNDS_SECONDS.len()).map(|i| self.bucket(i)).sum()
    }

    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for i in 0..=BOUNDS_SECONDS.len() {
            cumulative += self.bucket(i);
            let le = match BOUNDS_SECONDS.get(i) {
                Some(b) => format!("{b}"),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let sum_nanos: u64 = self
            .0
            .iter()
            .map(|l| l.0.sum_nanos.load(Ordering::Relaxed))
            .sum();
        let sum = sum_nanos as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// The journal's figures, measured around its store (`store::metered::Metered`), whatever
/// the store.
#[derive(Debug, Default)]
pub(crate) struct JournalMetrics {
    /// How long each awaited write took to become durable (its group commit, fsync included).
    pub(crate) commit: Histogram,
    /// Writes issued (a run's creation, steps, a run's end, a re-drive, a prune).
    pub(crate) writes: Counter,
    /// Writes that failed.
    pub(crate) failed_writes: Counter,
}
