//! Cron triggers: a small tokio loop per trigger on `croner` schedules.
//!
//! Why not tokio-cron-scheduler: its repeated jobs can stop firing once `next_tick` drifts into
//! the past (its issue #113), it has had DST errors (#107), and it polls every 500 ms. Here each
//! trigger sleeps exactly until its next fire time, computed in the trigger's time zone by
//! `croner` (which resolves DST gaps forward and ambiguous times to the first occurrence).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::error::Error;
use crate::ingress::{Admitted, App, Record, Refused, Submission};
use crate::run::RunId;
use crate::triggers::{Overlap, Tick};
use crate::workflow::DynWorkflow;

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    cron: croner::Cron,
    tz: Tz,
}

impl Schedule {
    pub(crate) fn new(expr: &str, tz: Option<&str>) -> Result<Self, Error> {
        let cron = croner::Cron::new(expr)
            .with_seconds_optional()
            .parse()
            .map_err(|e| Error::Config(format!("invalid cron expression `{expr}`: {e}")))?;
        let tz = match tz {
            None => Tz::UTC,
            Some(name) => name
                .parse()
                .map_err(|_| Error::Config(format!("unknown time zone `{name}`")))?,
        };
        Ok(Self { cron, tz })
    }

    /// The first fire time strictly after `after`.
    pub(crate) fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The next `n` fire times after now (for `list`).
    pub(crate) fn upcoming(&self, n: usize) -> Vec<DateTime<Tz>> {
        let mut out = Vec::with_capacity(n);
        let mut t = Utc::now();
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next.with_timezone(&self.tz));
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

/// Fires `wf` on `schedule` until `shutdown` turns true.
pub(crate) async fn run(
    app: Arc<App>,
    wf: Arc<dyn DynWorkflow>,
    schedule: Schedule,
    overlap: Overlap,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let name = wf.graph().name;
    // At most one run at a time for `skip` and `queue`; `waiting` counts queued ticks.
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let waiting = Arc::new(AtomicUsize::new(0));
    let mut after = Utc::now();
    loop {
        let Some(next) = schedule.next_after(after) else {
            tracing::warn!(
                workflow = name,
                "cron schedule has no further fire time; trigger stopped"
            );
            return;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let fired = Utc::now();
        after = next;
        // Woken long after the next fire time too (suspended machine, overloaded host): do not
        // replay the backlog, resume from now.
        if schedule.next_after(next).is_some_and(|n| n < fired) {
            tracing::warn!(workflow = name, scheduled = %next, "cron ticks were missed; resuming from now");
            after = fired;
        }
        let tick = Tick {
            scheduled_ms: next.timestamp_millis(),
            fired_ms: fired.timestamp_millis(),
        };
        app.observe
            .cron_fired(name, (fired - next).to_std().unwrap_or_default());
        let guard = match overlap {
            Overlap::Concurrent => None,
            Overlap::Skip => match gate.clone().try_lock_owned() {
                Ok(g) => Some(Ok(g)),
                Err(_) => {
                    tracing::info!(workflow = name, scheduled = %next, "cron tick skipped: the previous run is still going");
                    app.observe.cron_skipped(name);
                    continue;
                }
            },
            Overlap::Queue => match gate.clone().try_lock_owned() {
                Ok(g) => Some(Ok(g)),
                Err(_) if waiting.load(Ordering::SeqCst) == 0 => Some(Err(gate.clone())),
                Err(_) => {
                    tracing::info!(workflow = name, scheduled = %next, "cron tick skipped: one run is already queued");
                    app.observe.cron_skipped(name);
                    continue;
                }
            },
        };
        let Ok(permit) = app.limiter.clone().acquire_owned().await else {
            return;
        };
        let (app, wf, waiting) = (app.clone(), wf.clone(), waiting.clone());
        tokio::spawn(async move {
            let _gate = match guard {
                None => None,
                Some(Ok(g)) => Some(g),
                Some(Err(gate)) => {
                    waiting.fetch_add(1, Ordering::SeqCst);
                    let g = gate.lock_owned().await;
                    waiting.fetch_sub(1, Ordering::SeqCst);
                    Some(g)
                }
            };
            // On a journal shared by several runners, each of them fires every tick: the key
            // of the scheduled time makes the first one the tick's only run.
            let shared = app.journal.store().shared();
            let submission = Submission {
                workflow: wf.clone(),
                input: axum::body::Bytes::from(serde_json::to_vec(&tick).unwrap_or_default()),
                run_id: RunId::new(),
                key: shared.then(|| format!("cron:{}", tick.scheduled_ms)),
                trace_parent: None,
                record: Record::WithFirstStep,
            };
            match app.submit(submission).await {
                // Awaited so the overlap gate is held for the whole run.
                Ok(Admitted::New(run)) => {
                    let _ = run.spawn(&app, permit).await;
                }
                Ok(Admitted::Existing(_)) => {}
                Err(Refused::Input(e)) => {
                    tracing::error!(workflow = name, error = %e, "cron input rejected")
                }
                Err(Refused::Journal(e)) => {
                    tracing::error!(workflow = name, error = %e, "cron tick not started: the journal cannot record it")
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_five_seconds() {
        let s = Schedule::new("*/5 * * * * *", None).unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-01-01T00:00:05Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:04.5Z")),
            Some(utc("2026-01-01T00:00:05Z"))
        );
    }

    #[test]
    fn five_field_expressions_start_at_minutes() {
        let s = Schedule::new("30 9 * * *", Some("UTC")).unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-01-01T09:30:00Z"))
        );
    }

    #[test]
    fn daily_in_paris_across_spring_forward() {
        // Europe/Paris skips 02:00-03:00 on 2026-03-29. A 02:30 job runs at 03:00 local that
        // day (the gap resolves forward), then at 02:30 again.
        let s = Schedule::new("0 30 2 * * *", Some("Europe/Paris")).unwrap();
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let t1 = s.next_after(utc("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(
            t1,
            paris
                .with_ymd_and_hms(2026, 3, 29, 3, 0, 0)
                .unwrap()
                .with_timezone(&Utc)
        );
        let t2 = s.next_after(t1).unwrap();
        assert_eq!(
            t2,
            paris
                .with_ymd_and_hms(2026, 3, 30, 2, 30, 0)
                .unwrap()
                .with_timezone(&Utc)
        );
        // Each fire time is one per local day: 23 h then 24 h apart in UTC terms.
        assert_eq!((t2 - t1).num_hours(), 23);
    }

    #[test]
    fn daily_in_paris_across_fall_back_fires_once() {
        // 02:30 happens twice on 2026-10-25 in Europe/Paris; the job fires once, at the first.
        let s = Schedule::new("0 30 2 * * *", Some("Europe/Paris")).unwrap();
        let t1 = s.next_after(utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(t1, utc("2026-10-25T00:30:00Z")); // 02:30 CEST (UTC+2)
        let t2 = s.next_after(t1).unwrap();
        assert_eq!(t2, utc("2026-10-26T01:30:00Z")); // 02:30 CET (UTC+1), the next day
    }

    #[test]
    fn hourly_keeps_utc_spacing_across_dst() {
        let s = Schedule::new("0 0 * * * *", Some("Europe/Paris")).unwrap();
        let mut t = utc("2026-03-28T23:30:00Z");
        let mut times = Vec::new();
        for _ in 0..4 {
            t = s.next_after(t).unwrap();
            times.push(t);
        }
        for pair in times.windows(2) {
            assert_eq!((pair[1] - pair[0]).num_minutes(), 60, "{times:?}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Schedule::new("61 * * * * *", None).is_err());
        assert!(Schedule::new("* * * * * *", Some("Mars/Olympus")).is_err());
    }
}
