//! What a trigger is, as the macro declares it and the runner reads it: [`TriggerDef`], and the
//! payload types of cron ([`Tick`]) and database-event ([`DbEvent`]) triggers.

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
