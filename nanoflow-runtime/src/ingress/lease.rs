//! Takeover on a shared journal (issue 12): every runner polls, at a jittered interval, for the
//! runs of runners whose lease lapsed (a crash, a lost network, a stalled process), claims them
//! under a new fencing epoch and resumes each after its last completed step. Polling alone
//! keeps this correct: nothing depends on a notification arriving.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::App;

/// Most runs claimed per poll: a dead runner's backlog is shared among the survivors.
const CLAIM_BATCH: usize = 32;

/// How long to wait before the next poll: a fifth of the lease (at most a second), times a
/// random factor in [0.5, 1.5), so that runners do not poll in step.
fn next_poll(lease: Duration) -> Duration {
    let base = (lease / 5).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let factor = 0.5 + (crate::id::random_u64() % 1000) as f64 / 1000.0;
    base.mul_f64(factor)
}

/// Claims and resumes orphaned runs until the runner stops. Returns at once for a journal that
/// is not shared (its restart resumes everything unfinished instead).
pub(crate) async fn take_over(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let journal = app.journal.clone();
    if !journal.store().shared() {
        return;
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep(next_poll(app.config.lease)) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        if journal.health().is_err() {
            continue;
        }
        // Leave room for the runs this runner is asked for: claim only with free slots.
        let free = app.limiter.available_permits().min(CLAIM_BATCH);
        if free == 0 {
            continue;
        }
        let claimed = match journal.store().claim_orphans(free).await {
            Ok(runs) => runs,
            Err(e) => {
                tracing::debug!(error = %e, "claiming orphaned runs failed; retrying");
                continue;
            }
        };
        for record in claimed {
            let (run_id, workflow) = (record.run_id, record.workflow.clone());
            tracing::info!(%run_id, workflow, completed_steps = record.completed_steps().len(), "taking over a run whose runner's lease lapsed");
            if let Err(e) = app.resume(record).await {
                tracing::error!(%run_id, error = %e, "cannot resume a run taken over");
            }
        }
    }
}
