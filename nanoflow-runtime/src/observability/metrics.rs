//! Prometheus metrics, hand-rolled on atomics: recording is a few relaxed `fetch_add`s on
//! counters that were all created when the runner started (no map insert, no lock, no
//! allocation on the hot path); `GET /metrics` renders the text format from them.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::graph::Graph;

pub(crate) use crate::stats::{Counter, Histogram, JournalMetrics};

/// One step of one workflow.
#[derive(Debug, Default)]
pub(crate) struct NodeMetrics {
    duration: Histogram,
    succeeded: Counter,
    failed: Counter,
    retries: Counter,
}

/// One workflow's counters, created when the runner starts.
#[derive(Debug)]
pub(crate) struct WorkflowMetrics {
    name: &'static str,
    started: Counter,
    succeeded: Counter,
    failed: Counter,
    /// Runs parked because the graph changed under them (issue 13).
    blocked: Counter,
    /// Run tasks that ended because their run waits (a signal, a sleep): the run resumes on a
    /// task of its own later, counted as started again.
    suspended: Counter,
    duration: Histogram,
    cron_lag: Histogram,
    cron_skipped: Counter,
    nodes: Vec<(&'static str, NodeMetrics)>,
    /// Steps not in the graph (compensations, named `step~undo`), added on first use.
    extra: Mutex<Vec<(&'static str, Arc<NodeMetrics>)>>,
}

impl WorkflowMetrics {
    fn new(graph: &Graph) -> Self {
        Self {
            name: graph.name,
            started: Counter::default(),
            succeeded: Counter::default(),
            failed: Counter::default(),
            blocked: Counter::default(),
            suspended: Counter::default(),
            duration: Histogram::default(),
            cron_lag: Histogram::default(),
            cron_skipped: Counter::default(),
            nodes: graph
                .steps
                .iter()
                .map(|s| (s.name, NodeMetrics::default()))
                .collect(),
            extra: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn run_started(&self) {
        self.started.inc();
    }

    pub(crate) fn run_finished(&self, succeeded: bool, took: Duration) {
        self.duration.observe(took);
        if succeeded {
            self.succeeded.inc();
        } else {
            self.failed.inc();
        }
    }

    /// A run was parked as `blocked`: it ends here, neither succeeded nor failed.
    pub(crate) fn run_blocked(&self, took: Duration) {
        self.duration.observe(took);
        self.blocked.inc();
    }

    /// A run's task ended because the run waits.
    pub(crate) fn run_suspended(&self) {
        self.suspended.inc();
    }

    pub(crate) fn cron_fired(&self, lag: Duration) {
        self.cron_lag.observe(lag);
    }

    pub(crate) fn cron_skipped(&self) {
        self.cron_skipped.inc();
    }

    /// One attempt of step `step` ended; `failed` tells whether it failed and, if so, whether
    /// it will be retried.
    pub(crate) fn attempt(&self, step: &'static str, took: Duration, failed: Option<bool>) {
        let record = |n: &NodeMetrics| {
            n.duration.observe(took);
            match failed {
                None => n.succeeded.inc(),
                Some(retry) => {
                    n.failed.inc();
                    if retry {
                        n.retries.inc();
                    }
                }
            }
        };
        // Steps are few: a scan beats hashing, and names usually share their address.
        if let Some((_, n)) = self
            .nodes
            .iter()
            .find(|(name, _)| std::ptr::eq(*name, step) || *name == step)
        {
            return record(n);
        }
        let node = {
            let mut extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
            match extra.iter().find(|(name, _)| *name == step) {
                Some((_, n)) => n.clone(),
                None => {
                    let n = Arc::new(NodeMetrics::default());
                    extra.push((step, n.clone()));
                    n
                }
            }
        };
        record(&node);
    }

    fn in_flight(&self) -> u64 {
        // Finished first: a run's finish is counted after its start, so this never goes negative.
        let finished =
            self.succeeded.get() + self.failed.get() + self.blocked.get() + self.suspended.get();
        self.started.get().saturating_sub(finished)
    }
}

/// Every metric of a runner.
#[derive(Debug)]
pub(crate) struct Metrics {
    workflows: Vec<Arc<WorkflowMetrics>>,
}

impl Metrics {
    pub(crate) fn new<'a>(graphs: impl IntoIterator<Item = &'a Graph>) -> Self {
        Self {
            workflows: graphs
                .into_iter()
                .map(|g| Arc::new(WorkflowMetrics::new(g)))
                .collect(),
        }
    }

    pub(crate) fn workflow(&self, name: &str) -> Option<&Arc<WorkflowMetrics>> {
        // A run's name is its graph's: the same address, compared before the bytes.
        self.workflows
            .iter()
            .find(|w| std::ptr::eq(w.name, name) || w.name == name)
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub(crate) fn render(
        &self,
        journal: Option<(&JournalMetrics, u64, (u64, Duration))>,
        event_listeners: usize,
        slots: (usize, usize),
    ) -> String {
        let mut out = String::with_capacity(4096);
        let wf = |w: &WorkflowMetrics| format!("workflow=\"{}\"", escape(w.name));
        header(
            &mut out,
            "nanoflow_build_info",
            "gauge",
            "The nanoflow version serving (always 1).",
        );
        let _ = writeln!(
            out,
            "nanoflow_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );

        header(
            &mut out,
            "nanoflow_runs_started_total",
            "counter",
            "Runs started (including resumed and re-driven runs), by workflow.",
        );
        for w in &self.workflows {
            let _ = writeln!(
                out,
                "nanoflow_runs_started_total{{{}}} {}",
                wf(w),
                w.started.get()
            );
        }
        header(
            &mut out,
            "nanoflow_runs_suspended_total",
            "counter",
            "Run tasks that ended because their run waits for a signal or a sleep's end (it resumes later, counted as started again).",
        );
        for w in &self.workflows {
            let _ = writeln!(
                out,
                "nanoflow_runs_suspended_total{{{}}} {}",
                wf(w),
                w.suspended.get()
            );
        }
        header(
            &mut out,
            "nanoflow_runs_finished_total",
            "counter",
            "Runs finished, by workflow and status (succeeded, failed, or blocked: parked because the graph changed).",
        );
        for w in &self.workflows {
            for (status, c) in [
                ("succeeded", &w.succeeded),
                ("failed", &w.failed),
                ("blocked", &w.blocked),
            ] {
                let _ = writeln!(
                    out,
                    "nanoflow_runs_finished_total{{{},status=\"{status}\"}} {}",
                    wf(w),
                    c.get()
                );
            }
        }
        header(
            &mut out,
            "nanoflow_runs_in_flight",
            "gauge",
            "Runs started and not finished, by workflow.",
        );
        for w in &self.workflows {
            let _ = writeln!(
                out,
                "nanoflow_runs_in_flight{{{}}} {}",
                wf(w),
                w.in_flight()
            );
        }
        header(
            &mut out,
            "nanoflow_run_slots",
            "gauge",
            "Run slots (`--max-in-flight`): `state=\"used\"` or `state=\"free\"`.",
        );
        let _ = writeln!(out, "nanoflow_run_slots{{state=\"used\"}} {}", slots.0);
        let _ = writeln!(out, "nanoflow_run_slots{{state=\"free\"}} {}", slots.1);
        header(
            &mut out,
            "nanoflow_run_duration_seconds",
            "histogram",
            "How long runs took, start to finish, by workflow.",
        );
        for w in &self.workflows {
            w.duration
                .render(&mut out, "nanoflow_run_duration_seconds", &wf(w));
        }

        let nodes = |w: &WorkflowMetrics| -> Vec<(&'static str, Arc<NodeMetrics>)> {
            w.extra.lock().unwrap_or_else(|p| p.into_inner()).clone()
        };
        let extras: Vec<_> = self.workflows.iter().map(|w| nodes(w)).collect();
        let each_node = |f: &mut dyn FnMut(String, &NodeMetrics)| {
            for (w, extra) in self.workflows.iter().zip(&extras) {
                let all = w
                    .nodes
                    .iter()
                    .map(|(n, m)| (*n, m))
                    .chain(extra.iter().map(|(n, m)| (*n, &**m)));
                for (name, m) in all {
                    f(format!("{},node=\"{}\"", wf(w), escape(name)), m);
                }
            }
        };
        header(
            &mut out,
            "nanoflow_node_duration_seconds",
            "histogram",
            "How long node attempts took, by workflow and node (step name).",
        );
        each_node(&mut |labels, m| {
            m.duration
                .render(&mut out, "nanoflow_node_duration_seconds", &labels)
        });
        header(
            &mut out,
            "nanoflow_node_attempts_total",
            "counter",
            "Node attempts, by workflow, node and outcome (succeeded or failed).",
        );
        each_node(&mut |labels, m| {
            let _ = writeln!(
                out,
                "nanoflow_node_attempts_total{{{labels},outcome=\"succeeded\"}} {}",
                m.succeeded.get()
            );
            let _ = writeln!(
                out,
                "nanoflow_node_attempts_total{{{labels},outcome=\"failed\"}} {}",
                m.failed.get()
            );
        });
        header(
            &mut out,
            "nanoflow_node_retries_total",
            "counter",
            "Failed node attempts that were retried, by workflow and node.",
        );
        each_node(&mut |labels, m| {
            let _ = writeln!(
                out,
                "nanoflow_node_retries_total{{{labels}}} {}",
                m.retries.get()
            );
        });

        let cron: Vec<_> = self
            .workflows
            .iter()
            .filter(|w| w.cron_lag.count() > 0 || w.cron_skipped.get() > 0)
            .collect();
        if !cron.is_empty() {
            header(
                &mut out,
                "nanoflow_cron_lag_seconds",
                "histogram",
                "How late cron ticks fired after their scheduled time, by workflow.",
            );
            for w in &cron {
                w.cron_lag
                    .render(&mut out, "nanoflow_cron_lag_seconds", &wf(w));
            }
            header(
                &mut out,
                "nanoflow_cron_ticks_skipped_total",
                "counter",
                "Cron ticks dropped by the trigger's overlap policy, by workflow.",
            );
            for w in &cron {
                let _ = writeln!(
                    out,
                    "nanoflow_cron_ticks_skipped_total{{{}}} {}",
                    wf(w),
                    w.cron_skipped.get()
                );
            }
        }

        if let Some((j, transactions, (syncs, synced))) = journal {
            header(
                &mut out,
                "nanoflow_journal_commit_seconds",
                "histogram",
                "How long each awaited journal write took to become durable (its group commit, fsync included).",
            );
            j.commit
                .render(&mut out, "nanoflow_journal_commit_seconds", "");
            header(
                &mut out,
                "nanoflow_journal_writes_total",
                "counter",
                "Journal writes issued (a run's creation, steps, a run's end, a re-drive, a prune).",
            );
            let _ = writeln!(out, "nanoflow_journal_writes_total {}", j.writes.get());
            header(
                &mut out,
                "nanoflow_journal_failed_writes_total",
                "counter",
                "Journal writes that failed.",
            );
            let _ = writeln!(
                out,
                "nanoflow_journal_failed_writes_total {}",
                j.failed_writes.get()
            );
            header(
                &mut out,
                "nanoflow_journal_transactions_total",
                "counter",
                "Transactions the journal's store committed (several writes share one).",
            );
            let _ = writeln!(out, "nanoflow_journal_transactions_total {transactions}");
            header(
                &mut out,
                "nanoflow_journal_syncs_total",
                "counter",
                "Flushes of the journal's file to the disk (fdatasync) by the runner itself; 0 for a store whose server syncs (PostgreSQL).",
            );
            let _ = writeln!(out, "nanoflow_journal_syncs_total {syncs}");
            header(
                &mut out,
                "nanoflow_journal_sync_seconds_total",
                "counter",
                "Time spent in those flushes: divided by their count, what the disk costs each commit.",
            );
            let _ = writeln!(
                out,
                "nanoflow_journal_sync_seconds_total {}",
                synced.as_secs_f64()
            );
        }
        header(
            &mut out,
            "nanoflow_event_listeners",
            "gauge",
            "Clients connected to the live event stream (`GET /events`).",
        );
        let _ = writeln!(out, "nanoflow_event_listeners {event_listeners}");
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(5));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(1000));
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(
            out.contains("x_bucket{a=\"b\",le=\"0.00001\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"300\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3\n"), "{out}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
