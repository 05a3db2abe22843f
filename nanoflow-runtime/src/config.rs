//! How a runner is configured: [`ServeConfig`] (every field a command-line flag and an
//! environment variable) and the admin token. Plain values, read by every layer above.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::store::Retention;

/// How `serve` runs. Every field has a command-line flag and an environment variable.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen (`--addr`, `NANOFLOW_ADDR`; default `127.0.0.1:8080`).
    pub addr: SocketAddr,
    /// Largest accepted request body in bytes (`--max-body`; default 1 MiB). Larger: 413.
    pub max_body: usize,
    /// Most runs in flight at once (`--max-in-flight`; default 4096). Past it: 503; a queue
    /// trigger pulls no more messages until a run ends.
    pub max_in_flight: usize,
    /// How long a shutdown waits for in-flight runs (`--grace`; default 30 s).
    pub grace: Duration,
    /// How long a client may take to send a request's headers (`--header-timeout`; default
    /// 10 s); a slower one is disconnected.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body once its headers arrived
    /// (`--body-timeout`; default 30 s); a slower one gets 408.
    pub body_timeout: Duration,
    /// How long a keep-alive connection may stay open with no request (`--idle-timeout`;
    /// default 60 s). Under pressure (connections past three quarters of `max_connections`)
    /// idle connections are closed at once.
    pub idle_timeout: Duration,
    /// Most open connections before idle ones are shed (`--max-connections`); `None`: from the
    /// open files limit, which `serve` raises to its hard limit at start.
    pub max_connections: Option<usize>,
    /// How many finished runs `GET /runs/{id}` remembers without a journal (`--keep-runs`;
    /// default 10000).
    pub keep_runs: usize,
    /// The journal file (`--journal`, `NANOFLOW_JOURNAL`; default `.nanoflow/journal.db`);
    /// `None` (`--journal off`) runs without durability.
    pub journal: Option<std::path::PathBuf>,
    /// How long finished runs stay in the journal (`--retention-age`, `--retention-runs`).
    pub retention: Retention,
    /// This runner's id on a shared (PostgreSQL) journal (`--runner-id`, `NANOFLOW_RUNNER_ID`);
    /// `None`: host, process id and a random suffix.
    pub runner_id: Option<String>,
    /// How long this runner's lease on its runs lasts without a heartbeat, on a shared
    /// journal (`--lease`, `NANOFLOW_LEASE`; default 10 s): after it, other runners take its
    /// unfinished runs over.
    pub lease: Duration,
    /// Where nodes run when they do not choose (`--isolation process|container`).
    #[cfg(feature = "container")]
    pub isolation: crate::isolation::IsolationMode,
    /// Container pools and limits.
    #[cfg(feature = "container")]
    pub containers: crate::isolation::ContainerConfig,
    /// The NATS server of queue triggers and `nanoflow::publish` (`--nats-url`,
    /// `NANOFLOW_NATS_URL`, e.g. `nats://127.0.0.1:4222`). Without it, queue triggers are inactive.
    pub nats_url: Option<String>,
    /// The PostgreSQL database of database-event triggers (`--database-url`,
    /// `NANOFLOW_DATABASE_URL`, e.g. `postgres://app@127.0.0.1/shop`). Without it, they are inactive.
    pub database_url: Option<String>,
    /// Record Prometheus metrics and serve `GET /metrics` (`--metrics on|off`, `NANOFLOW_METRICS`;
    /// default on).
    pub metrics: bool,
    /// The token that guards the dashboard, `/runs*`, `/metrics`, `/events` and `/workflows`
    /// (`--admin-token`, `NANOFLOW_ADMIN_TOKEN`); `None`: they are open.
    pub admin_token: Option<AdminToken>,
    /// Serve the operations surface without a token on a non-loopback address
    /// (`--insecure-admin`); refused at start otherwise.
    pub insecure_admin: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body: 1024 * 1024,
            // A journaled run holds its slot across its commits: with 1024, queue-triggered runs
            // waited for slots while the journal's group commits stayed small (docs/benchmarks.md,
            // eleventh round). A run in flight costs a few kilobytes.
            max_in_flight: 4096,
            grace: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            keep_runs: 10_000,
            journal: Some(std::path::PathBuf::from(".nanoflow/journal.db")),
            retention: Retention::default(),
            runner_id: None,
            lease: Duration::from_secs(10),
            #[cfg(feature = "container")]
            isolation: crate::isolation::IsolationMode::default(),
            #[cfg(feature = "container")]
            containers: crate::isolation::ContainerConfig::default(),
            nats_url: None,
            database_url: None,
            metrics: true,
            admin_token: None,
            insecure_admin: false,
        }
    }
}

/// The shortest admin token accepted: 16 bytes. A shorter one falls to guessing, throttle or
/// not (a 1-character token is one of 94 values).
pub(crate) const MIN_TOKEN_LEN: usize = 16;

/// The token that guards the operations surface (dashboard, `/runs*`, `/metrics`, `/events`,
/// `/workflows`). Its `Debug` form never shows it.
///
/// ```
/// let token = nanoflow_runtime::AdminToken::new("correct-horse-battery-staple").unwrap();
/// assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
/// assert!(nanoflow_runtime::AdminToken::new("has space").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Arc<str>);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A token: 16 to 512 visible ASCII characters, none of `"`, `,`, `;` or `\` (it travels
    /// in a header). At least 16 bytes, since a short token can be guessed.
    ///
    /// ```
    /// assert!(nanoflow_runtime::AdminToken::new("x").is_err());
    /// ```
    pub fn new(token: impl Into<String>) -> Result<Self, Error> {
        let token = token.into();
        let bad = |b: u8| !b.is_ascii_graphic() || matches!(b, b'"' | b',' | b';' | b'\\');
        if token.len() > 512 || token.bytes().any(bad) {
            return Err(Error::Config(
                "the admin token must be at most 512 visible ASCII characters without spaces, `\"`, `,`, `;` or `\\` \
                 (e.g. the output of `openssl rand -hex 32`)"
                    .into(),
            ));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(Error::Config(format!(
                "the admin token is {} characters long; it must have at least {MIN_TOKEN_LEN}, because a short \
                 token can be guessed (e.g. use the output of `openssl rand -hex 32`)",
                token.len()
            )));
        }
        Ok(Self(token.into()))
    }

    /// Whether `candidate` is this token, in time independent of where they differ.
    pub(crate) fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }
}

/// Compares in time that depends only on the lengths, never on the contents.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
