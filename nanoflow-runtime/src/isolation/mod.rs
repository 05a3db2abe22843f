//! Running nodes in their own containers: one minimal image per node, built from the service's
//! own binary; warm pools; dispatch over a bind-mounted Unix socket (never a network address);
//! secure by default (no network, read-only root, non-root user, no capabilities,
//! no-new-privileges, memory/CPU/pids limits).

mod image;
mod owner;
mod pool;
mod protocol;
mod server;

/// The list of images `cargo build` made (written by `nanoflow-build`, read at `serve`).
pub use nanoflow_build::manifest;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use bollard::Docker;

use crate::error::Error;
use crate::graph::{Graph, Step};
use crate::node::{Isolation, NodeError, NodeOptions};
use crate::workflow::DynWorkflow;

/// Where nodes run when they do not say (`serve --isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationMode {
    /// In the runner's process, unless a node asks for `isolation = "container"`.
    #[default]
    Process,
    /// Every node in a container, unless it asks for `isolation = "process"`.
    Container,
}

/// Container settings of a runner.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// The service name in image names and container labels (default: the binary's whole
    /// file name, lowercased, other characters than `a-z0-9_.-` as `-`).
    pub service: String,
    /// Containers kept warm per node (default 1).
    pub min_warm: usize,
    /// Most containers per node (default 4).
    pub max_per_node: usize,
    /// Calls in flight per container (default 8).
    pub concurrency: usize,
    /// A container idle this long is removed, down to `min_warm` (default 60 s).
    pub idle_timeout: Duration,
    /// How long a call of a node without a `timeout` waits for a free container slot when
    /// its pool is at `max_per_node` (default 30 s); past it the call fails, retryable, with
    /// `503 container_pool_busy`. A node with a timeout waits at most that timeout.
    pub slot_wait: Duration,
    /// How often the pools are checked against the engine (dead containers removed, pools
    /// refilled to `min_warm`) and the engine pinged (default 2 s; while the engine does not
    /// answer, pings back off from 250 ms up to this interval).
    pub health_interval: Duration,
    /// The Docker Engine address, `unix:///path` or `tcp://host:port` (default: `DOCKER_HOST`,
    /// else `unix:///var/run/docker.sock`).
    pub engine: Option<String>,
    /// Memory limit of a node without `memory = ...` (default 256 MiB).
    pub memory_bytes: u64,
    /// CPU limit of a node without `cpus = ...`, in thousandths (default 1000: one CPU).
    pub cpu_millis: u32,
    /// Most processes/threads in a container (default 64).
    pub pids_limit: i64,
    /// Give containers a network (default false: `network none`).
    pub network: bool,
    /// Where per-container socket directories are created (default `$TMPDIR/nanoflow-sockets`).
    pub socket_dir: PathBuf,
    /// The binary to package (default: this process's executable).
    pub binary: Option<PathBuf>,
    /// Extra arguments for the image's entrypoint (a test binary needs its node-server test's
    /// name; see `Runner::serve_node_if_requested`).
    pub entrypoint_args: Vec<String>,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        let service = std::env::current_exe()
            .ok()
            .and_then(|p| service_name(&p))
            .unwrap_or_else(|| "service".into());
        Self {
            service,
            min_warm: 1,
            max_per_node: 4,
            concurrency: 8,
            idle_timeout: Duration::from_secs(60),
            slot_wait: Duration::from_secs(30),
            health_interval: Duration::from_secs(2),
            engine: None,
            memory_bytes: 256 << 20,
            cpu_millis: 1000,
            pids_limit: 64,
            network: false,
            socket_dir: std::env::temp_dir().join("nanoflow-sockets"),
            binary: None,
            entrypoint_args: Vec::new(),
        }
    }
}

/// The service name of the program at `binary`: its whole file name (`nf-newcomer` and
/// `nf-other` are two services), lowercased, with characters Docker does not accept in
/// names as `-`.
fn service_name(binary: &std::path::Path) -> Option<String> {
    let stem = binary.file_stem()?.to_string_lossy().to_ascii_lowercase();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Whether `options` (a node's, under its workflow's defaults) run in a container in `mode`.
pub(crate) fn in_container(options: &NodeOptions, mode: IsolationMode) -> bool {
    match options.isolation {
        Some(Isolation::Container) => true,
        Some(Isolation::Process) => false,
        None => mode == IsolationMode::Container,
    }
}

/// Connects to the Docker Engine named by `DOCKER_HOST` (default `/var/run/docker.sock`).
pub async fn connect() -> Result<Docker, Error> {
    let target =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    connect_to(&target).await
}

/// Connects to the Docker Engine at `target` (`unix:///path` or `tcp://host:port`).
pub async fn connect_to(target: &str) -> Result<Docker, Error> {
    let unreachable = |e: &dyn std::fmt::Display| {
        Error::Container(format!(
            "container isolation needs a Docker Engine, and none answers at `{target}` ({e}); start `dockerd` or set DOCKER_HOST"
        ))
    };
    let docker = match target.strip_prefix("unix://") {
        Some(path) => Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION),
        None => Docker::connect_with_http(target, 120, bollard::API_DEFAULT_VERSION),
    }
    .map_err(|e| unreachable(&e))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable(&e))?;
    docker.ping().await.map_err(|e| unreachable(&e))?;
    Ok(docker)
}

/// The container pools of a runner, one per container-isolated node.
#[derive(Debug)]
pub struct Containers {
    pools: HashMap<&'static str, Arc<pool::Pool>>,
    docker: Docker,
    /// Set while the engine does not answer; shared with the pools.
    engine_down: Arc<AtomicBool>,
    /// The global mode, for nodes that do not choose.
    pub(crate) mode: IsolationMode,
}

/// What `images build` did for one node.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The node.
    pub node: &'static str,
    /// `nanoflow/<service>-<node>:<hash>`.
    pub tag: String,
    /// False when an image with this content already existed.
    pub built: bool,
    /// Bytes packaged (binary and libraries).
    pub size: u64,
}

/// The nodes that run in containers under `mode`, each once.
fn container_steps(workflows: &[Arc<dyn DynWorkflow>], mode: IsolationMode) -> Vec<Step> {
    let graphs: Vec<&'static Graph> = workflows.iter().map(|w| w.graph()).collect();
    steps_in(&graphs, mode)
}

/// The nodes of `graphs` (and of their sub-workflows) that run in containers under `mode`, each
/// once, sorted by name. Takes graphs rather than workflows so that a node image's runner
/// (`cfg(nanoflow_node)`) never instantiates the engine behind `DynWorkflow`.
pub(crate) fn steps_in(graphs: &[&'static Graph], mode: IsolationMode) -> Vec<Step> {
    fn visit(graph: &Graph, mode: IsolationMode, seen: &mut HashMap<&'static str, Step>) {
        for step in &graph.steps {
            match step.subgraph() {
                // A workflow used as a node runs its own steps: those go to containers.
                Some(sub) => visit(sub, mode, seen),
                None if in_container(&step.options, mode) => {
                    seen.entry(step.node).or_insert_with(|| step.clone());
                }
                None => {}
            }
        }
    }
    let mut seen: HashMap<&'static str, Step> = HashMap::new();
    for graph in graphs {
        visit(graph, mode, &mut seen);
    }
    let mut steps: Vec<Step> = seen.into_values().collect();
    steps.sort_by_key(|s| s.node);
    steps
}

/// Builds (or finds) the image of every container-isolated node.
pub async fn build_images(
    docker: &Docker,
    workflows: &[Arc<dyn DynWorkflow>],
    mode: IsolationMode,
    config: &ContainerConfig,
) -> Result<Vec<BuiltImage>, Error> {
    let steps = container_steps(workflows, mode);
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    let binary = match &config.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .map_err(|e| Error::io("finding this program's executable", e))?,
    };
    // The images `cargo build` made for this very binary (nanoflow-build), when still there.
    let prebuilt = image::prebuilt(&binary);
    let mut payload = None;
    let mut out = Vec::new();
    for step in steps {
        if let Some((tag, size)) = image::find_prebuilt(docker, prebuilt.as_ref(), step.node).await
        {
            tracing::info!(node = step.node, image = %tag, "node image from `cargo build`");
            out.push(BuiltImage {
                node: step.node,
                tag,
                built: false,
                size,
            });
            continue;
        }
        let payload = match &mut payload {
            Some(p) => p,
            None => payload.insert(image::payload(&binary)?),
        };
        let tag = image::tag(&config.service, step.node, payload.digest);
        let started = Instant::now();
        let built = image::ensure(
            docker,
            payload,
            &tag,
            &step,
            &config.service,
            &config.entrypoint_args,
        )
        .await?;
        tracing::info!(node = step.node, image = %tag, built, took_ms = started.elapsed().as_millis() as u64, "node image ready");
        out.push(BuiltImage {
            node: step.node,
            tag,
            built,
            size: payload.size,
        });
    }
    Ok(out)
}

impl Containers {
    /// Connects to Docker, removes containers a crashed runner left, builds the images and
    /// starts the warm pools. `None` when no node runs in a container.
    pub(crate) async fn start(
        workflows: &[Arc<dyn DynWorkflow>],
        mode: IsolationMode,
        config: &ContainerConfig,
    ) -> Result<Option<Arc<Self>>, Error> {
        let steps = container_steps(workflows, mode);
        if steps.is_empty() {
            return Ok(None);
        }
        let docker = match &config.engine {
            Some(target) => connect_to(target).await?,
            None => connect().await?,
        };
        let orphans = pool::remove_orphans(&docker, &config.service).await?;
        if orphans.removed > 0 {
            tracing::info!(
                removed = orphans.removed,
                "removed containers left by a runner that is gone"
            );
        }
        if orphans.kept > 0 {
            tracing::debug!(
                kept = orphans.kept,
                "left alone the containers of runners that are alive or cannot be checked"
            );
        }
        std::fs::create_dir_all(&config.socket_dir)
            .map_err(|e| Error::io(format!("creating {}", config.socket_dir.display()), e))?;
        let images = build_images(&docker, workflows, mode, config).await?;
        let engine_down = Arc::new(AtomicBool::new(false));
        let mut pools = HashMap::new();
        for (step, built) in steps.iter().zip(images) {
            let limits = pool::Limits {
                memory_bytes: step.options.memory_bytes.unwrap_or(config.memory_bytes) as i64,
                nano_cpus: i64::from(step.options.cpu_millis.unwrap_or(config.cpu_millis))
                    * 1_000_000,
            };
            let p = Arc::new(pool::Pool::new(
                docker.clone(),
                step.node,
                built.tag,
                limits,
                step.options.timeout,
                config.clone(),
                engine_down.clone(),
            ));
            pools.insert(step.node, p.clone());
            if let Err(e) = p.warm().await {
                // Leave nothing running behind a runner that does not start.
                for p in pools.values() {
                    p.shutdown().await;
                }
                return Err(e);
            }
        }
        let containers = Arc::new(Self {
            pools,
            docker,
            engine_down,
            mode,
        });
        tokio::spawn(health(Arc::downgrade(&containers), config.health_interval));
        Ok(Some(containers))
    }

    /// One health check: the running containers of this runner, or the engine's error.
    async fn check(&self) -> Result<(), bollard::errors::Error> {
        use bollard::query_parameters::ListContainersOptions;
        let filters: HashMap<String, Vec<String>> = [(
            "label".to_owned(),
            vec![format!(
                "{}={}",
                owner::RUNNER,
                owner::Owner::this().instance
            )],
        )]
        .into();
        let running: std::collections::HashSet<String> = self
            .docker
            .list_containers(Some(ListContainersOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await?
            .into_iter()
            .filter_map(|c| c.id)
            .collect();
        let was_down = self.engine_down.swap(false, Ordering::SeqCst);
        if was_down {
            tracing::info!("the Docker Engine answers again; checking and refilling the pools");
        }
        for p in self.pools.values() {
            p.check(&running).await;
        }
        Ok(())
    }

    /// Whether node `node` with `options` runs in a container here.
    pub(crate) fn serves(&self, node: &str, options: &NodeOptions) -> bool {
        in_container(options, self.mode) && self.pools.contains_key(node)
    }

    /// Calls `node` once in one of its containers.
    pub(crate) async fn call(
        &self,
        node: &str,
        input: Bytes,
        state: Option<Bytes>,
    ) -> Result<(Bytes, Option<Bytes>), NodeError> {
        match self.pools.get(node) {
            Some(p) => p.call(input, state).await,
            None => Err(NodeError::permanent(format!(
                "node `{node}` has no container pool"
            ))),
        }
    }

    /// Live containers and cold starts per node (for metrics and tests).
    pub fn stats(&self) -> Vec<(&'static str, usize, usize)> {
        let mut v: Vec<_> = self
            .pools
            .iter()
            .map(|(n, p)| {
                (
                    *n,
                    p.size(),
                    p.cold_starts.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Removes every container.
    pub(crate) async fn shutdown(&self) {
        for p in self.pools.values() {
            p.shutdown().await;
        }
    }
}

impl crate::run::NodeHost for Containers {
    fn serves(&self, node: &str, options: &NodeOptions) -> bool {
        Containers::serves(self, node, options)
    }

    fn call<'a>(
        &'a self,
        node: &'a str,
        input: Bytes,
        state: Option<Bytes>,
    ) -> crate::graph::BoxFuture<'a, Result<(Bytes, Option<Bytes>), NodeError>> {
        Box::pin(Containers::call(self, node, input, state))
    }

    fn stats(&self) -> Vec<(&'static str, usize, usize)> {
        Containers::stats(self)
    }

    fn ready(&self) -> Result<(), String> {
        if self.engine_down.load(Ordering::SeqCst) {
            return Err("the Docker Engine is unreachable; pools refill when it is back".into());
        }
        let cold: Vec<&str> = Containers::stats(self)
            .into_iter()
            .filter(|(_, size, _)| *size == 0)
            .map(|(node, _, _)| node)
            .collect();
        if cold.is_empty() {
            Ok(())
        } else {
            Err(format!("no warm container yet for {}", cold.join(", ")))
        }
    }

    fn shutdown(&self) -> crate::graph::BoxFuture<'_, ()> {
        Box::pin(Containers::shutdown(self))
    }
}

/// Checks the pools every `interval` while the engine answers, and pings it with a backoff
/// while it does not; ends with the runner.
async fn health(containers: std::sync::Weak<Containers>, interval: Duration) {
    // A zero interval would spin.
    let interval = interval.max(Duration::from_millis(50));
    let first_retry = Duration::from_millis(250).min(interval);
    let mut delay = interval;
    let mut down = false;
    loop {
        tokio::time::sleep(delay).await;
        let Some(c) = containers.upgrade() else {
            return;
        };
        let checked = match tokio::time::timeout(Duration::from_secs(10), c.docker.ping()).await {
            Ok(Ok(_)) => c.check().await.map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 10 s".to_owned()),
        };
        match checked {
            Ok(()) => {
                down = false;
                delay = interval;
            }
            Err(e) => {
                c.engine_down.store(true, Ordering::SeqCst);
                if down {
                    delay = (delay * 2).min(interval);
                } else {
                    tracing::warn!(error = %e, "the Docker Engine does not answer; container nodes answer 503 until it is back");
                    down = true;
                    delay = first_retry;
                }
            }
        }
    }
}

/// Serves one node inside its container: `NANOFLOW_NODE_SERVE` names it and
/// `NANOFLOW_NODE_SOCKET` the socket. Returns `None` when the variables are not set.
pub(crate) async fn serve_node_from_env(
    workflows: &[Arc<dyn DynWorkflow>],
) -> Option<Result<(), Error>> {
    let graphs: Vec<&'static Graph> = workflows.iter().map(|w| w.graph()).collect();
    serve_node_of(&graphs).await
}

/// [`serve_node_from_env`] on graphs: the node named by `NANOFLOW_NODE_SERVE`, looked up in
/// `graphs` and their sub-workflows.
pub(crate) async fn serve_node_of(graphs: &[&'static Graph]) -> Option<Result<(), Error>> {
    let node = std::env::var("NANOFLOW_NODE_SERVE").ok()?;
    let socket =
        std::env::var("NANOFLOW_NODE_SOCKET").unwrap_or_else(|_| "/run/nanoflow/node.sock".into());
    let step = steps_in(graphs, IsolationMode::Container)
        .into_iter()
        .find(|s| s.node == node);
    Some(match step {
        Some(step) => server::serve(step.node, step.call_json, std::path::Path::new(&socket)).await,
        None => Err(Error::Config(format!(
            "this program has no node `{node}` to serve"
        ))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_named_by_the_whole_binary_name() {
        let name = |p: &str| service_name(std::path::Path::new(p));
        assert_eq!(name("/usr/bin/nf-newcomer").as_deref(), Some("nf-newcomer"));
        assert_ne!(name("/usr/bin/nf-newcomer"), name("/usr/bin/nf-other"));
        assert_eq!(name("/x/My Service.exe").as_deref(), Some("my-service"));
    }

    #[test]
    fn an_unreachable_engine_is_a_retryable_503_with_its_own_code() {
        let e = pool::engine_unavailable("debit", &"connection refused");
        assert_eq!(
            (e.status(), e.code()),
            (Some(503), "container_engine_unavailable")
        );
        assert!(e.is_retryable());
        let stored: NodeError = serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(stored, e, "the code survives the journal");
        let unknown: NodeError = serde_json::from_value(
            serde_json::json!({"kind": "retryable", "message": "m", "code": "from_the_future"}),
        )
        .unwrap();
        assert_eq!(unknown.code(), "node_failed");
    }
}
