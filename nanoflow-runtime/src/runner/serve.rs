//! `serve`: the HTTP server, the cron loops, and graceful shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::Runner;
use crate::admin::AdminToken;
use crate::error::Error;
use crate::journal::{Created, Journal, NewRun, Retention, RunRecord};
use crate::observability::Observability;
use crate::run::{Durable, RunCtx, RunId};
use crate::runs::{RunError, Runs};
use crate::triggers::{cron, http, TriggerDef};
use crate::workflow::{DynWorkflow, JsonRun};

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
            max_in_flight: 1024,
            grace: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            keep_runs: 10_000,
            journal: Some(std::path::PathBuf::from(".nanoflow/journal.db")),
            retention: Retention::default(),
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

/// State shared by every handler and trigger loop.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) workflows: BTreeMap<&'static str, Arc<dyn DynWorkflow>>,
    pub(crate) runs: Runs,
    pub(crate) limiter: Arc<Semaphore>,
    pub(crate) config: ServeConfig,
    pub(crate) journal: Option<Journal>,
    pub(crate) containers: Option<crate::run::Isolated>,
    /// For each workflow, the workflows chained `after` it.
    pub(crate) downstream: crate::triggers::chain::Downstream,
    /// Connections of the queue and database-event triggers.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) services: crate::triggers::Services,
    /// Metrics and the live event stream.
    pub(crate) observe: Arc<Observability>,
    /// Dashboard sessions and the admin token's throttle.
    pub(crate) admin: crate::admin::AdminState,
    /// Turns true when the runner stops: trigger loops end, body reads in progress give up.
    pub(crate) stop: watch::Sender<bool>,
    /// Recorded runs that stopped because the journal failed under them: resumed once it
    /// writes again.
    pub(crate) stalled: Mutex<Vec<RunId>>,
}

impl std::fmt::Debug for dyn DynWorkflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Workflow({})", self.graph().name)
    }
}

impl App {
    /// The context of a new run: journaled when the journal is on. The run row is written with
    /// the run's first record, so input that fails to parse writes nothing.
    pub(crate) fn context(
        &self,
        wf: &dyn DynWorkflow,
        run_id: RunId,
        input: &Bytes,
        idempotency_key: Option<String>,
    ) -> RunCtx {
        let graph = wf.graph();
        let ctx = match &self.journal {
            None => RunCtx::with_id(graph.name, run_id),
            Some(journal) => RunCtx::durable(
                graph.name,
                run_id,
                Durable {
                    journal: journal.clone(),
                    graph,
                    resumed: Default::default(),
                    pending_create: Mutex::new(Some(NewRun {
                        run_id,
                        workflow: graph.name,
                        input: input.clone(),
                        idempotency_key,
                    })),
                    downstream: self.downstream_of(graph.name),
                },
            ),
        };
        self.isolate(ctx.observed(self.observe.observer(graph.name)))
    }

    fn isolate(&self, ctx: RunCtx) -> RunCtx {
        ctx.with_containers(self.containers.clone())
    }

    /// Claims an idempotency key for `run_id`. `None`: the key is new and the run is recorded
    /// (durably, with the journal); `Some(Ok(id))`: the key belongs to run `id`.
    pub(crate) async fn claim_idempotency_key(
        &self,
        workflow: &'static str,
        key: &str,
        run_id: RunId,
        input: &Bytes,
    ) -> Option<Result<RunId, Error>> {
        match &self.journal {
            Some(journal) => {
                let run = NewRun {
                    run_id,
                    workflow,
                    input: input.clone(),
                    idempotency_key: Some(key.to_owned()),
                };
                match journal.create_run(run).await {
                    Ok(Created::New) => None,
                    Ok(Created::Existing(original)) => Some(Ok(original)),
                    Err(e) => Some(Err(e)),
                }
            }
            None => self.runs.claim(workflow, key, run_id).map(Ok),
        }
    }

    /// Drives a started run on its own task (it completes even if its caller goes away),
    /// holding `permit` until it ends, and records and logs its end.
    pub(crate) fn spawn_run(
        self: &Arc<Self>,
        run_id: RunId,
        workflow: &'static str,
        future: JsonRun,
        permit: OwnedSemaphorePermit,
    ) -> tokio::task::JoinHandle<Result<Bytes, Error>> {
        if self.journal.is_none() {
            self.runs.started(run_id, workflow);
        }
        self.observe.run_started(run_id, workflow);
        let app = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = future.await;
            app.finish(run_id, workflow, started, &result);
            drop(permit);
            result
        })
    }

    /// Drives a started run in the caller's task (no hop to another task on the hot path).
    /// If the caller is dropped before the run ends (the HTTP client went away), the rest of
    /// the run is spawned, so an accepted run always completes.
    pub(crate) async fn drive_inline(
        self: &Arc<Self>,
        run_id: RunId,
        workflow: &'static str,
        future: JsonRun,
        permit: OwnedSemaphorePermit,
        remember: bool,
    ) -> Result<Bytes, Error> {
        // Without a journal, a synchronous run that succeeds is not kept in memory: its client
        // has the output. Failed runs are (their error names the run id), and so are runs with
        // an idempotency key (a repeat must find them).
        if self.journal.is_none() && remember {
            self.runs.started(run_id, workflow);
        }
        self.observe.run_started(run_id, workflow);
        let app = self.clone();
        let run: JsonRun = Box::pin(async move {
            let started = Instant::now();
            let result = future.await;
            if app.journal.is_none() && !remember && result.is_err() {
                app.runs.started(run_id, workflow);
            }
            app.finish(run_id, workflow, started, &result);
            drop(permit);
            result
        });
        let mut guard = CompleteOnDrop(Some(run));
        let result = guard.0.as_mut().expect("present until completed").await;
        guard.0 = None;
        result
    }

    /// The workflows chained `after` `workflow`.
    fn downstream_of(&self, workflow: &str) -> Vec<&'static str> {
        self.downstream.get(workflow).cloned().unwrap_or_default()
    }

    /// Records a finished run (in memory, when there is no journal), logs one line for it, and
    /// starts the runs chained after it.
    fn finish(
        self: &Arc<Self>,
        run_id: RunId,
        workflow: &'static str,
        started: Instant,
        result: &Result<Bytes, Error>,
    ) {
        let took = started.elapsed();
        self.observe.run_finished(run_id, workflow, took, result);
        let duration_ms = took.as_secs_f64() * 1000.0;
        match result {
            Ok(output) => {
                tracing::info!(%run_id, workflow, status = "succeeded", duration_ms, "run finished");
                if self.journal.is_none() {
                    self.runs.finished(run_id, Ok(output.clone()));
                }
                crate::triggers::chain::start(self, run_id, workflow, output);
            }
            Err(Error::Journal(why)) if self.journal.is_some() => {
                tracing::warn!(%run_id, workflow, error = %why, "run stopped: the journal cannot write; it resumes when the journal recovers, if it was recorded");
                self.stalled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(run_id);
            }
            Err(error) => {
                tracing::warn!(%run_id, workflow, status = "failed", duration_ms, error = %error, "run finished");
                if self.journal.is_none() {
                    self.runs
                        .finished(run_id, Err(RunError::from_error(error).1));
                }
            }
        }
    }

    /// Continues a journaled run from its last completed step (after a restart, or a re-drive
    /// of a failed run from its failed step).
    pub(crate) async fn resume(
        self: &Arc<Self>,
        record: RunRecord,
    ) -> Result<Option<tokio::task::JoinHandle<Result<Bytes, Error>>>, Error> {
        let Some(journal) = &self.journal else {
            return Ok(None);
        };
        let Some(wf) = self.workflows.get(record.workflow.as_str()).cloned() else {
            tracing::error!(run_id = %record.run_id, workflow = %record.workflow, "cannot resume: no such workflow in this runner");
            return Ok(None);
        };
        let graph = wf.graph();
        let resumed = record.completed_steps().into_iter().collect();
        let ctx = self.isolate(
            RunCtx::durable(
                graph.name,
                record.run_id,
                Durable {
                    journal: journal.clone(),
                    graph,
                    resumed,
                    pending_create: Mutex::new(None),
                    downstream: self.downstream_of(graph.name),
                },
            )
            .observed(self.observe.observer(graph.name)),
        );
        let future = match wf.start(ctx, &record.input) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(run_id = %record.run_id, error = %e, "cannot resume: the journaled input no longer fits");
                return Ok(None);
            }
        };
        let permit = self
            .limiter
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Config("runner stopped".into()))?;
        tracing::info!(run_id = %record.run_id, workflow = graph.name, completed_steps = record.completed_steps().len(), "resuming run");
        Ok(Some(self.spawn_run(
            record.run_id,
            graph.name,
            future,
            permit,
        )))
    }

    pub(crate) fn new(
        runner: &Runner,
        config: &ServeConfig,
        containers: Option<crate::run::Isolated>,
    ) -> Result<Arc<Self>, Error> {
        runner.check()?;
        let journal = match &config.journal {
            Some(path) => Some(Journal::open(path)?),
            None => None,
        };
        let observe = Observability::new(
            runner.workflows.values().map(|wf| wf.graph()),
            config.metrics,
        );
        Ok(Arc::new(App {
            observe,
            workflows: runner.workflows.clone(),
            runs: Runs::new(config.keep_runs),
            limiter: Arc::new(Semaphore::new(config.max_in_flight)),
            config: config.clone(),
            journal,
            containers,
            downstream: crate::triggers::chain::downstream(&runner.workflows),
            services: Default::default(),
            admin: Default::default(),
            stop: watch::channel(false).0,
            stalled: Mutex::new(Vec::new()),
        }))
    }
}

/// Owns a run's future while a caller awaits it; spawns the remainder if dropped early.
struct CompleteOnDrop(Option<JsonRun>);

impl Drop for CompleteOnDrop {
    fn drop(&mut self) {
        if let Some(rest) = self.0.take() {
            tokio::spawn(rest);
        }
    }
}

/// A running server, from [`Runner::start`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    app: Arc<App>,
}

impl Server {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight runs finish within the grace period, then returns.
    pub async fn shutdown(self) -> Result<(), Error> {
        let _ = self.app.stop.send(true);
        // Event streams never end on their own; a graceful shutdown waits for open responses.
        self.app.observe.events.close();
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
        if let Some(containers) = &self.app.containers {
            containers.shutdown().await;
        }
        match drained {
            Ok(Ok(())) => Ok(()),
            Ok(Err(join)) => Err(Error::Config(format!(
                "the HTTP server task failed: {join}"
            ))),
            Err(_) => {
                let left = max as usize - limiter.available_permits();
                tracing::warn!(
                    runs_in_flight = left,
                    ?grace,
                    "grace period over; exiting with runs still in flight"
                );
                Ok(())
            }
        }
    }
}

impl Runner {
    /// Binds the HTTP triggers, starts the cron loops, and returns a handle to stop them.
    pub async fn start(self, config: ServeConfig) -> Result<Server, Error> {
        self.check()?;
        crate::admin::check_exposure(&config)?;
        #[cfg(feature = "container")]
        let containers = {
            let workflows: Vec<_> = self.workflows.values().cloned().collect();
            crate::isolation::Containers::start(&workflows, config.isolation, &config.containers)
                .await?
                .map(|c| c as crate::run::Isolated)
        };
        #[cfg(not(feature = "container"))]
        let containers = None;
        let app = App::new(&self, &config, containers)?;
        let mut schedules = Vec::new();
        for wf in app.workflows.values() {
            for trigger in &wf.graph().triggers {
                if let TriggerDef::Cron {
                    schedule,
                    tz,
                    overlap,
                } = trigger
                {
                    schedules.push((wf.clone(), cron::Schedule::new(schedule, *tz)?, *overlap));
                }
            }
        }
        // Read before any trigger can accept a run: a run this runner accepts is not unfinished
        // work of a previous one, and resuming it too would run it twice.
        let unfinished = match &app.journal {
            Some(journal) => journal.unfinished_runs().await?,
            None => Vec::new(),
        };
        let router =
            http::router(&app)?.merge(crate::admin::guarded(&app, crate::triggers::routes(&app)));
        let open_files = super::listen::raise_open_files_limit();
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {}", config.addr), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        let shutdown = &app.stop;
        crate::triggers::start(&app, shutdown).await?;
        for (wf, schedule, overlap) in schedules {
            tokio::spawn(cron::run(
                app.clone(),
                wf,
                schedule,
                overlap,
                shutdown.subscribe(),
            ));
        }
        // Room for the journal, the engine and NATS connections beside the clients.
        let max_connections = config.max_connections.unwrap_or_else(|| {
            open_files.map_or(4096, |n| n.saturating_sub(128).clamp(64, 1 << 20) as usize)
        });
        let limits = super::listen::Limits {
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            max_connections,
        };
        let task = tokio::spawn(super::listen::serve(
            listener,
            router,
            limits,
            shutdown.subscribe(),
        ));
        if let Some(journal) = &app.journal {
            // Every run that was accepted but not finished when the runner stopped continues
            // after its last completed step.
            for record in unfinished {
                let _ = app.resume(record).await?;
            }
            tokio::spawn(resume_stalled(app.clone(), shutdown.subscribe()));
            let (journal, retention, mut stop) =
                (journal.clone(), config.retention, shutdown.subscribe());
            tokio::spawn(async move {
                loop {
                    match journal.prune(retention).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(pruned = n, "pruned finished runs past retention"),
                        Err(e) => tracing::warn!(error = %e, "pruning the journal failed"),
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(60)) => {}
                        _ = stop.changed() => return,
                    }
                }
            });
        }
        tracing::info!(%addr, workflows = app.workflows.len(), journal = ?config.journal, "nanoflow serving");
        Ok(Server { addr, task, app })
    }
}

/// Resumes the recorded runs that stopped while the journal failed, once it writes again.
async fn resume_stalled(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let Some(journal) = app.journal.clone() else {
        return;
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        if journal.health().is_err() {
            continue;
        }
        let stalled = std::mem::take(&mut *app.stalled.lock().unwrap_or_else(|p| p.into_inner()));
        for run_id in stalled {
            match journal.get_run(run_id).await {
                Ok(Some(record)) if record.status == crate::runs::RunStatus::Running => {
                    if let Err(e) = app.resume(record).await {
                        tracing::error!(%run_id, error = %e, "cannot resume a run stopped by the journal");
                    }
                }
                // Never recorded: its client was told it stopped for good.
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%run_id, error = %e, "cannot read a stalled run yet");
                    app.stalled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(run_id);
                }
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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

/// Logs to stderr, filtered by `NANOFLOW_LOG` (e.g. `info`, `warn`, `nanoflow_runtime=debug`);
/// with the `otel` feature, also exports spans over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is
/// set. Keep the returned guard until exit: dropping it flushes the export.
pub(crate) fn init_logging() -> Result<crate::observability::ExportGuard, Error> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;

    let filter = tracing_subscriber::EnvFilter::try_from_env("NANOFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only on a terminal: a log file or a collector gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_filter(filter);
    let registry = tracing_subscriber::registry().with(log);
    #[cfg(feature = "otel")]
    {
        let (layer, guard) = crate::observability::otel::layer()?.unzip();
        let _ = registry.with(layer).try_init();
        Ok(crate::observability::ExportGuard { otel: guard })
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = registry.try_init();
        Ok(crate::observability::ExportGuard {})
    }
}

/// Parses `1048576`, `64KiB`, `1MiB`, `2MB`.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: usize = n
        .parse()
        .map_err(|_| format!("invalid size `{text}`; e.g. 1048576, 512KiB, 1MiB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1_000_000,
        "mib" => 1024 * 1024,
        _ => {
            return Err(format!(
                "invalid size `{text}`: unknown unit; use B, KB, KiB, MB or MiB"
            ))
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("size `{text}` is too large"))
}

/// Parses `30s`, `500ms`, `2m`, `12h`, `7d`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("invalid duration `{text}`; e.g. 30s, 500ms, 2m"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "d" => Ok(Duration::from_secs(n * 86400)),
        _ => Err(format!("invalid duration `{text}`: use ms, s, m, h or d")),
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
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("2y").is_err());
    }
}
