//! `serve`: the HTTP server, the cron loops, and graceful shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::{watch, Semaphore};

use super::Runner;
use crate::error::Error;
use crate::run::RunId;
use crate::runs::Runs;
use crate::triggers::{cron, http, TriggerDef};
use crate::workflow::DynWorkflow;

/// How `serve` runs. Every field has a command-line flag and an environment variable.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen (`--addr`, `NANOFLOW_ADDR`; default `127.0.0.1:8080`).
    pub addr: SocketAddr,
    /// Largest accepted request body in bytes (`--max-body`; default 1 MiB). Larger: 413.
    pub max_body: usize,
    /// Most runs in flight at once (`--max-in-flight`; default 1024). Past it: 503.
    pub max_in_flight: usize,
    /// How long a shutdown waits for in-flight runs (`--grace`; default 30 s).
    pub grace: Duration,
    /// How many finished runs `GET /runs/{id}` remembers (`--keep-runs`; default 10000).
    pub keep_runs: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body: 1024 * 1024,
            max_in_flight: 1024,
            grace: Duration::from_secs(30),
            keep_runs: 10_000,
        }
    }
}

/// State shared by every handler and trigger loop.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) workflows: BTreeMap<&'static str, Arc<dyn DynWorkflow>>,
    pub(crate) runs: Runs,
    pub(crate) limiter: Arc<Semaphore>,
    pub(crate) config: ServeConfig,
}

impl std::fmt::Debug for dyn DynWorkflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Workflow({})", self.graph().name)
    }
}

impl App {
    /// Records a finished run and logs one line for it.
    pub(crate) fn finish(&self, run_id: RunId, workflow: &'static str, started: Instant, result: &Result<Bytes, Error>) {
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(output) => {
                tracing::info!(%run_id, workflow, status = "succeeded", duration_ms, "run finished");
                self.runs.finished(run_id, Ok(output.clone()));
            }
            Err(error) => {
                tracing::warn!(%run_id, workflow, status = "failed", duration_ms, error = %error, "run finished");
                self.runs.finished(run_id, Err(http::run_error(error).1));
            }
        }
    }
}

/// A running server, from [`Runner::start`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
    app: Arc<App>,
}

impl Server {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight runs finish within the grace period, then returns.
    pub async fn shutdown(self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        let grace = self.app.config.grace;
        let max = self.app.config.max_in_flight as u32;
        let limiter = self.app.limiter.clone();
        let drained = tokio::time::timeout(grace, async {
            let served = (&mut { self.task }).await;
            // Every run holds a permit: when all are back, no run is in flight.
            let _all = limiter.acquire_many(max).await;
            served
        })
        .await;
        match drained {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(Error::Config(format!("the HTTP server task failed: {join}"))),
            Err(_) => {
                let left = max as usize - limiter.available_permits();
                tracing::warn!(runs_in_flight = left, ?grace, "grace period over; exiting with runs still in flight");
                Ok(())
            }
        }
    }
}

impl Runner {
    /// Binds the HTTP triggers, starts the cron loops, and returns a handle to stop them.
    pub async fn start(self, config: ServeConfig) -> Result<Server, Error> {
        self.check()?;
        let app = Arc::new(App {
            workflows: self.workflows.clone(),
            runs: Runs::new(config.keep_runs),
            limiter: Arc::new(Semaphore::new(config.max_in_flight)),
            config: config.clone(),
        });
        let mut schedules = Vec::new();
        for wf in app.workflows.values() {
            for trigger in &wf.graph().triggers {
                if let TriggerDef::Cron { schedule, tz, overlap } = trigger {
                    schedules.push((wf.clone(), cron::Schedule::new(schedule, *tz)?, *overlap));
                }
            }
        }
        let router = http::router(&app)?;
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {}", config.addr), e))?;
        let addr = listener.local_addr().map_err(|e| Error::io("reading the bound address", e))?;
        let (shutdown, mut stop) = watch::channel(false);
        for (wf, schedule, overlap) in schedules {
            tokio::spawn(cron::run(app.clone(), wf, schedule, overlap, shutdown.subscribe()));
        }
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                })
                .await
                .map_err(|e| Error::io("serving HTTP", e))
        });
        tracing::info!(%addr, workflows = app.workflows.len(), "nanoflow serving");
        Ok(Server { addr, shutdown, task, app })
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Logs to stderr, filtered by `NANOFLOW_LOG` (e.g. `info`, `warn`, `nanoflow_runtime=debug`).
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NANOFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Parses `1048576`, `64KiB`, `1MiB`, `2MB`.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: usize = n.parse().map_err(|_| format!("invalid size `{text}`; e.g. 1048576, 512KiB, 1MiB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1_000_000,
        "mib" => 1024 * 1024,
        _ => return Err(format!("invalid size `{text}`: unknown unit; use B, KB, KiB, MB or MiB")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("size `{text}` is too large"))
}

/// Parses `30s`, `500ms`, `2m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("invalid duration `{text}`; e.g. 30s, 500ms, 2m"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration `{text}`: use ms, s or m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("1 parsec").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("2h").is_err());
    }
}
