//! What starts a workflow: the triggers declared with `#[trigger(...)]` inside `workflow!`.

pub(crate) mod chain;
pub(crate) mod cron;
pub(crate) mod http;
pub mod openapi;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "nats")]
pub mod queue;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::Error;
use crate::runner::serve::{App, ServeConfig};

/// What a cron trigger does when a tick comes while the previous run is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// Drop the tick (default).
    #[default]
    Skip,
    /// Start the run as soon as the previous one finishes (at most one waiting).
    Queue,
    /// Start the run anyway.
    Concurrent,
}

impl Overlap {
    /// The name used in `#[trigger(cron = "...", overlap = "...")]`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::Concurrent => "concurrent",
        }
    }
}

/// One `#[trigger(...)]` of a workflow, as declared (validated at compile time).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TriggerDef {
    /// `#[trigger(http = "POST /orders")]`: the JSON body is the input.
    Http {
        /// The HTTP method, upper case.
        method: &'static str,
        /// The route, e.g. `/orders/{id}`.
        path: &'static str,
    },
    /// `#[trigger(cron = "0 */5 * * * *", tz = "Europe/Paris")]`: the input is a `Tick`.
    Cron {
        /// Six fields (seconds first) or five (minutes first).
        schedule: &'static str,
        /// IANA time zone; UTC when absent.
        tz: Option<&'static str>,
        /// What to do with a tick while the previous run is still going.
        overlap: Overlap,
    },
    /// `#[trigger(queue = "orders.created")]`: a message's JSON is the input.
    Queue {
        /// The subject consumed.
        subject: &'static str,
    },
    /// `#[trigger(postgres = "public.orders", on = "insert|update")]`: a `DbEvent<Row>` is the input.
    Postgres {
        /// `schema.table`.
        table: &'static str,
        /// The operations that fire, e.g. `["insert", "update"]`.
        on: &'static [&'static str],
    },
    /// `#[trigger(after = checkout)]`: the output of another workflow is the input.
    After {
        /// The upstream workflow's name.
        workflow: &'static str,
    },
}

impl fmt::Display for TriggerDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TriggerDef::Http { method, path } => write!(f, "http {method} {path}"),
            TriggerDef::Cron {
                schedule,
                tz,
                overlap,
            } => {
                write!(f, "cron \"{schedule}\" {}", tz.unwrap_or("UTC"))?;
                if *overlap != Overlap::Skip {
                    write!(f, " overlap={}", overlap.as_str())?;
                }
                Ok(())
            }
            TriggerDef::Queue { subject } => write!(f, "queue {subject}"),
            TriggerDef::Postgres { table, on } => write!(f, "postgres {table} on {}", on.join("|")),
            TriggerDef::After { workflow } => write!(f, "after {workflow}"),
        }
    }
}

/// What a cron trigger gives the first node of its workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tick {
    /// When the run was scheduled, in milliseconds since the Unix epoch (UTC).
    pub scheduled_ms: i64,
    /// When it actually fired, in milliseconds since the Unix epoch (UTC).
    pub fired_ms: i64,
}

/// What a database-event trigger gives the first node of its workflow:
/// `#[trigger(postgres = "public.orders", on = "insert|update|delete")]`.
///
/// `Row` is your type for one row of the table (its columns as fields, as `to_jsonb(row)` writes
/// them). `old` is the row before an update or a delete, `new` the row after an insert or an
/// update.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// use nanoflow_runtime::{DbEvent, DbOp};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// pub struct Order { pub id: i64, pub status: String }
///
/// fn describe(e: DbEvent<Order>) -> String {
///     match (e.operation, e.old, e.new) {
///         (DbOp::Insert, _, Some(new)) => format!("order {} placed", new.id),
///         (DbOp::Update, Some(old), Some(new)) => format!("order {}: {} -> {}", new.id, old.status, new.status),
///         (DbOp::Delete, Some(old), _) => format!("order {} deleted", old.id),
///         _ => unreachable!("the operation says which rows are present"),
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "Row: serde::Serialize",
    deserialize = "Row: serde::Deserialize<'de>"
))]
pub struct DbEvent<Row> {
    /// The event's position in the outbox: increases with every change, in commit order for
    /// any one row.
    pub id: i64,
    /// The table, as `schema.table`.
    pub table: String,
    /// What happened to the row.
    pub operation: DbOp,
    /// The row before the change (updates and deletes).
    pub old: Option<Row>,
    /// The row after the change (inserts and updates).
    pub new: Option<Row>,
    /// When the change was written, in milliseconds since the Unix epoch (database clock).
    pub at_ms: i64,
}

/// The kind of change a [`DbEvent`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbOp {
    /// A row was inserted (`new` is set).
    Insert,
    /// A row was updated (`old` and `new` are set).
    Update,
    /// A row was deleted (`old` is set).
    Delete,
}

impl DbOp {
    /// `insert`, `update` or `delete`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DbOp::Insert => "insert",
            DbOp::Update => "update",
            DbOp::Delete => "delete",
        }
    }
}

/// Connections of the queue and database-event triggers, made when the runner starts.
#[derive(Debug, Default)]
pub(crate) struct Services {
    #[cfg(feature = "nats")]
    pub(crate) nats: std::sync::OnceLock<queue::Nats>,
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
    let built = match feature {
        "nats" => cfg!(feature = "nats"),
        _ => cfg!(feature = "postgres"),
    };
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
                http::error_response(
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
