//! `serve`: the HTTP server, the cron loops, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Runner;
use crate::config::ServeConfig;
use crate::error::Error;
use crate::ingress::{resume_stalled, App};
use crate::triggers::{cron, http, TriggerDef};

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
            #[cfg(feature = "nats")]
            crate::triggers::queue::send_owed(&self.app).await;
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
        let app = App::new(&self.workflows, &config, containers)?;
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
        // On a shared journal the unfinished runs may be other runners' work in progress:
        // they are claimed once their owner's lease lapses (`ingress/lease.rs`).
        let unfinished = match app.durable() {
            Some(journal) if !journal.store().shared() => journal.unfinished_runs().await?,
            _ => Vec::new(),
        };
        let router = {
            let (triggers, operations) = http::router(&app)?;
            http::with_fallbacks(
                triggers
                    .merge(crate::admin::routes(&app, operations)?)
                    .merge(crate::admin::guarded(&app, crate::triggers::routes(&app))),
            )
        };
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
            Arc::new(http::Direct::new(&app)?),
            limits,
            shutdown.subscribe(),
        ));
        tokio::spawn(crate::ingress::flow::queue_loop(
            app.clone(),
            shutdown.subscribe(),
        ));
        tokio::spawn(crate::ingress::flow::wake_loop(
            app.clone(),
            shutdown.subscribe(),
        ));
        crate::wait::set_sink(
            std::sync::Arc::downgrade(&app) as std::sync::Weak<dyn crate::wait::SignalSink>
        );
        if let Some(journal) = app.durable() {
            // Every run that was accepted but not finished when the runner stopped continues
            // after its last completed step.
            for record in unfinished {
                let _ = app.resume(record).await?;
            }
            tokio::spawn(resume_stalled(app.clone(), shutdown.subscribe()));
            tokio::spawn(crate::ingress::lease::take_over(
                app.clone(),
                shutdown.subscribe(),
            ));
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
        let journal = config
            .journal
            .as_ref()
            .map(|j| crate::store::redact_url(&j.to_string_lossy()));
        tracing::info!(%addr, workflows = app.workflows.len(), journal = ?journal, "nanoflow serving");
        Ok(Server { addr, task, app })
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
