//! What starts a workflow: the triggers declared with `#[trigger(...)]` inside `workflow!`.

pub(crate) mod cron;
pub(crate) mod http;

use std::fmt;

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
