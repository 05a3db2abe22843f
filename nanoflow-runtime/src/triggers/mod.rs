//! What starts a workflow: the triggers declared with `#[trigger(...)]` inside `workflow!`.

pub(crate) mod cron;
pub(crate) mod deploys;
pub(crate) mod http;
pub mod openapi;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "nats")]
pub mod queue;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::ServeConfig;
use crate::error::Error;
use crate::ingress::App;

pub use crate::trigger::{DbEvent, DbOp, Overlap, Tick, TriggerDef};

/// Connections of the queue and database-event triggers, made when the runner starts.
#[derive(Debug, Default)]
pub(crate) struct Services {
    #[cfg(feature = "nats")]
    pub(crate) nats: std::sync::OnceLock<queue::Nats>,
    /// The queue triggers' acknowledgements, which a shutdown sends before it returns.
    #[cfg(feature = "nats")]
    pub(crate) acks: std::sync::OnceLock<queue::Acks>,
    /// The queue-trigger subjects whose stream exists (set up by their consumer).
    #[cfg(feature = "nats")]
    pub(crate) streams: queue::StreamsReady,
    /// Per database-triggered workflow: listening, or why not (yet).
    #[cfg(feature = "postgres")]
    pub(crate) listeners:
        std::sync::Mutex<std::collections::BTreeMap<&'static str, Result<(), String>>>,
}

/// Why a trigger cannot fire in a runner with this configuration (`None`: it is active).
pub(crate) fn inactive(
    trigger: &TriggerDef,
    nats_url: Option<&str>,
    database_url: Option<&str>,
) -> Option<String> {
    let (feature, env, flag, url) = match trigger {
        TriggerDef::Queue { .. } => ("nats", "NANOFLOW_NATS_URL", "--nats-url", nats_url),
        TriggerDef::Postgres { .. } => (
            "postgres",
            "NANOFLOW_DATABASE_URL",
            "--database-url",
            database_url,
        ),
        _ => return None,
    };
    const BUILT: [(&str, bool); 2] = [
        ("nats", cfg!(feature = "nats")),
        ("postgres", cfg!(feature = "postgres")),
    ];
    let built = BUILT.iter().any(|&(name, on)| name == feature && on);
    if !built {
        return Some(format!(
            "this program was built without the `{feature}` feature of nanoflow; enable it (`nanoflow = {{ features = [\"{feature}\"] }}`)"
        ));
    }
    if url.is_none_or(str::is_empty) {
        return Some(format!("`{env}` is not set (or pass `{flag}`)"));
    }
    None
}

/// Starts the queue consumers and database-event listeners of `app`'s workflows; reports each
/// trigger that cannot fire with this configuration.
pub(crate) async fn start(app: &Arc<App>, shutdown: &watch::Sender<bool>) -> Result<(), Error> {
    let config: &ServeConfig = &app.config;
    let (mut queues, mut tables) = (0, 0);
    for wf in app.workflows.values() {
        for trigger in &wf.graph().triggers {
            match trigger {
                TriggerDef::Queue { .. } => queues += 1,
                TriggerDef::Postgres { .. } => tables += 1,
                _ => continue,
            }
            if let Some(why) = inactive(
                trigger,
                config.nats_url.as_deref(),
                config.database_url.as_deref(),
            ) {
                tracing::warn!(workflow = wf.graph().name, trigger = %trigger, "trigger inactive: {why}");
            }
        }
    }
    #[cfg(feature = "nats")]
    if let Some(url) = config.nats_url.as_deref().filter(|u| !u.is_empty()) {
        // Connected even without queue triggers: `publish` and `POST /queues/{subject}` use it.
        queue::start(app, url, shutdown).await?;
    }
    #[cfg(feature = "postgres")]
    if let Some(url) = config.database_url.as_deref().filter(|u| !u.is_empty()) {
        if tables > 0 {
            postgres::start(app, url, shutdown)?;
        }
    }
    let _ = (queues, tables, shutdown);
    Ok(())
}

/// The runner's routes for the queue side: `POST /queues/{subject}`.
pub(crate) fn routes(app: &Arc<App>) -> axum::Router {
    #[cfg(feature = "nats")]
    {
        queue::routes(app)
    }
    #[cfg(not(feature = "nats"))]
    {
        let _ = app;
        axum::Router::new().route(
            "/queues/{subject}",
            axum::routing::post(|| async {
                crate::ingress::reply::error_response(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "queue_unavailable",
                    "this runner was built without the `nats` feature of nanoflow",
                    |_| {},
                )
            }),
        )
    }
}

/// The wait before reconnection attempt `attempt` (1 for the first) to NATS or PostgreSQL:
/// doubling from 100 ms up to 10 s, with equal jitter.
#[cfg_attr(not(any(feature = "nats", feature = "postgres")), allow(dead_code))]
pub(crate) fn reconnect_delay(attempt: u32) -> Duration {
    let full = Duration::from_millis(100)
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(Duration::from_secs(10));
    let half = full / 2;
    let jitter = crate::run::random_u64() % (half.as_millis() as u64 + 1);
    half + Duration::from_millis(jitter)
}
