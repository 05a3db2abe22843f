//! Warm pools of node containers: start, dispatch over the bind-mounted socket, replace on
//! faults, reap when idle, remove at shutdown.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions,
};
use bollard::Docker;
use tokio::net::UnixStream;
use tokio::sync::Notify;

use super::owner::{Liveness, Owner};
use super::protocol::{bytes_of, raw, read_frame, write_frame, Request, Response};
use super::ContainerConfig;
use crate::error::Error;
use crate::node::{NodeError, RuntimeCode};

/// The label every container of this runner carries, with the service name as value.
pub(crate) const LABEL: &str = "nanoflow.service";
/// Label: the container's socket directory on the host (removed with the container).
const SOCKETS: &str = "nanoflow.sockets";

/// Resource limits of one node's containers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) memory_bytes: i64,
    pub(crate) nano_cpus: i64,
}

#[derive(Debug)]
pub(crate) struct Container {
    pub(crate) id: String,
    dir: PathBuf,
    socket: PathBuf,
    inflight: AtomicUsize,
    broken: AtomicBool,
    idle: Mutex<Vec<UnixStream>>,
    last_used: Mutex<Instant>,
}

/// The containers of one node.
#[derive(Debug)]
pub(crate) struct Pool {
    node: &'static str,
    image: String,
    limits: Limits,
    /// How long a call waits for a container slot: the node's timeout, else
    /// `ContainerConfig::slot_wait`.
    slot_wait: Duration,
    config: ContainerConfig,
    docker: Docker,
    containers: Mutex<Vec<Arc<Container>>>,
    /// Containers being started (each by its own task, see [`Pool::spawn_start`]).
    starting: AtomicUsize,
    /// Set at shutdown: no container is started after it, and one whose start was under
    /// way is removed, not pooled.
    closed: AtomicBool,
    /// Removals under way in the background (shutdown waits for them).
    removing: AtomicUsize,
    /// Set while the Docker Engine does not answer (by the health task or a failed call).
    engine_down: Arc<AtomicBool>,
    freed: Notify,
    /// Containers the engine could not remove while it was away (removed by `check`).
    leftovers: Mutex<Vec<String>>,
    pub(crate) cold_starts: AtomicUsize,
}

/// The error of a node whose container cannot be reached because the Docker Engine does not
/// answer: `503` with `Retry-After`, code `container_engine_unavailable`.
pub(crate) fn engine_unavailable(node: &str, why: &dyn std::fmt::Display) -> NodeError {
    NodeError::retryable(format!(
        "the Docker Engine does not answer, so node `{node}` cannot run in its container ({why}); retry later"
    ))
    .with_status(503)
    .with_code(RuntimeCode::ContainerEngineUnavailable)
}

/// Whether a Docker API error means the engine did not answer (as opposed to an answer
/// refusing the request).
pub(crate) fn unreachable(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    matches!(
        e,
        E::RequestTimeoutError
            | E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::HttpClientError { .. }
            | E::SocketNotFoundError(_)
    )
}

/// Gives back the `starting` count of a start when its task ends, however it ends.
struct Starting(Arc<Pool>);

impl Drop for Starting {
    fn drop(&mut self) {
        self.0.starting.fetch_sub(1, Ordering::SeqCst);
        self.0.freed.notify_waiters();
    }
}

/// Logs a wait for a slot that its caller gave up (the node's timeout fired, or the run
/// failed elsewhere): a pool that stays full should never be silent.
struct Waiting<'a> {
    pool: &'a Pool,
    since: Instant,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.done {
            tracing::warn!(
                node = self.pool.node,
                pool_size = self.pool.size(),
                starting = self.pool.starting.load(Ordering::SeqCst),
                max_per_node = self.pool.config.max_per_node,
                waited_ms = self.since.elapsed().as_millis() as u64,
                "a call gave up waiting for a container slot"
            );
        }
    }
}

impl Pool {
    pub(crate) fn new(
        docker: Docker,
        node: &'static str,
        image: String,
        limits: Limits,
        timeout: Option<Duration>,
        config: ContainerConfig,
        engine_down: Arc<AtomicBool>,
    ) -> Self {
        Self {
            node,
            image,
            limits,
            slot_wait: timeout.unwrap_or(config.slot_wait),
            config,
            docker,
            containers: Mutex::new(Vec::new()),
            starting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            removing: AtomicUsize::new(0),
            engine_down,
            freed: Notify::new(),
            leftovers: Mutex::new(Vec::new()),
            cold_starts: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts containers until `min_warm` are up (at start: the first failure is returned).
    pub(crate) async fn warm(self: &Arc<Self>) -> Result<(), Error> {
        loop {
            let start = {
                let list = self.lock();
                let have = list.len() + self.starting.load(Ordering::SeqCst);
                let start = have < self.config.min_warm;
                if start {
                    self.starting.fetch_add(1, Ordering::SeqCst);
                }
                start
            };
            if !start {
                return Ok(());
            }
            match self.spawn_start(false).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Error::Container(e.message().to_owned())),
                Err(e) => return Err(Error::Container(format!("starting a container: {e}"))),
            }
        }
    }

    /// Starts containers in the background until `min_warm` are up or starting.
    pub(crate) fn refill(self: &Arc<Self>) {
        let list = self.lock();
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let have = list.len() + self.starting.load(Ordering::SeqCst);
        for _ in have..self.config.min_warm {
            self.starting.fetch_add(1, Ordering::SeqCst);
            drop(self.spawn_start(false));
        }
    }

    /// The number of live containers.
    pub(crate) fn size(&self) -> usize {
        self.lock().len()
    }

    /// Calls the node once in one of its containers.
    pub(crate) async fn call(
        self: &Arc<Self>,
        input: Bytes,
        state: Option<Bytes>,
    ) -> Result<(Bytes, Option<Bytes>), NodeError> {
        let container = self.acquire().await?;
        let mut lease = Lease {
            pool: self,
            container,
            done: false,
        };
        let result = lease.exchange(input, state).await;
        lease.done = true;
        match result {
            Ok(r) => r,
            Err(fault) => {
                lease.container.broken.store(true, Ordering::SeqCst);
                Err(self.diagnose(&lease.container, &fault).await)
            }
        }
    }

    /// Drops broken containers from the pool (removing them in the background).
    fn prune(self: &Arc<Self>, list: &mut Vec<Arc<Container>>) {
        list.retain(|c| {
            let broken = c.broken.load(Ordering::SeqCst);
            if broken {
                self.remove_later(c.clone());
            }
            !broken
        });
    }

    /// A container with a free slot, starting one when there is room, waiting at most
    /// `slot_wait`. Cancellation-safe: a start runs on its own task and its container joins
    /// the pool even when the caller is gone.
    async fn acquire(self: &Arc<Self>) -> Result<Arc<Container>, NodeError> {
        let mut waiting = Waiting {
            pool: self,
            since: Instant::now(),
            done: false,
        };
        let deadline = tokio::time::Instant::now() + self.slot_wait;
        loop {
            let notified = self.freed.notified();
            // Decide under the lock, act after it: the guard must not live across an await.
            let start = {
                let mut list = self.lock();
                self.prune(&mut list);
                let best = list
                    .iter()
                    .filter(|c| c.inflight.load(Ordering::SeqCst) < self.config.concurrency)
                    .min_by_key(|c| c.inflight.load(Ordering::SeqCst))
                    .cloned();
                if let Some(c) = best {
                    c.inflight.fetch_add(1, Ordering::SeqCst);
                    waiting.done = true;
                    return Ok(c);
                }
                if self.closed.load(Ordering::SeqCst) {
                    waiting.done = true;
                    return Err(NodeError::retryable(format!(
                        "the runner is shutting down; node `{}` does not take calls",
                        self.node
                    )));
                }
                if self.engine_down.load(Ordering::SeqCst) {
                    waiting.done = true;
                    return Err(engine_unavailable(
                        self.node,
                        &"no running container has a free slot",
                    ));
                }
                let room =
                    list.len() + self.starting.load(Ordering::SeqCst) < self.config.max_per_node;
                if room {
                    self.starting.fetch_add(1, Ordering::SeqCst);
                }
                room
            };
            let waited = if start {
                match tokio::time::timeout_at(deadline, self.spawn_start(true)).await {
                    // Started and pooled: take a slot on the next turn.
                    Ok(Ok(Ok(()))) => continue,
                    Ok(Ok(Err(e))) => {
                        waiting.done = true;
                        return Err(e);
                    }
                    Ok(Err(e)) => {
                        waiting.done = true;
                        return Err(NodeError::retryable(format!(
                            "starting a container for node `{}` failed: {e}",
                            self.node
                        )));
                    }
                    Err(elapsed) => Err(elapsed),
                }
            } else {
                tokio::time::timeout_at(deadline, notified).await
            };
            if waited.is_err() {
                waiting.done = true;
                return Err(self.no_slot());
            }
        }
    }

    /// The error (and log line) of a call that found no slot within `slot_wait`.
    fn no_slot(&self) -> NodeError {
        let size = self.size();
        let starting = self.starting.load(Ordering::SeqCst);
        tracing::warn!(
            node = self.node,
            pool_size = size,
            starting,
            max_per_node = self.config.max_per_node,
            waited_ms = self.slot_wait.as_millis() as u64,
            "no container slot became free in time"
        );
        NodeError::retryable(format!(
            "no container of node `{}` had a free slot within {:?} ({size} running, {starting} starting, at most {}); retry later",
            self.node, self.slot_wait, self.config.max_per_node
        ))
        .with_status(503)
        .with_code(RuntimeCode::ContainerPoolBusy)
    }

    /// Starts one container on its own task (the caller has counted it in `starting`); the
    /// container joins the pool. A caller dropping the handle abandons nothing.
    fn spawn_start(self: &Arc<Self>, cold: bool) -> tokio::task::JoinHandle<Result<(), NodeError>> {
        let pool = self.clone();
        // Made here, not in the task: a task dropped before its first poll still gives back
        // its count.
        let starting = Starting(self.clone());
        tokio::spawn(async move {
            let _starting = starting;
            let c = pool.start().await?;
            if cold {
                pool.cold_starts.fetch_add(1, Ordering::Relaxed);
            }
            let closed = {
                let mut list = pool.lock();
                let closed = pool.closed.load(Ordering::SeqCst);
                if !closed {
                    list.push(c.clone());
                }
                closed
            };
            if closed {
                // Before `_starting` is dropped: shutdown waits for this removal.
                let _ = pool.remove(&c.id, Some(&c.dir)).await;
                return Err(NodeError::retryable(format!(
                    "the runner is shutting down; node `{}` is not started",
                    pool.node
                )));
            }
            Ok(())
        })
    }

    /// Creates and starts one container, and waits until its node serves on the socket. On
    /// failure nothing is left behind (container and socket directory are removed).
    async fn start(&self) -> Result<Arc<Container>, NodeError> {
        let name = format!(
            "nanoflow-{}-{}",
            self.node.replace('_', "-"),
            crate::run::RunId::new().as_u128() as u64
        );
        let dir = self.config.socket_dir.join(&name);
        let failed = |what: String| {
            let _ = std::fs::remove_dir_all(&dir);
            NodeError::retryable(format!(
                "cannot start a container for node `{}`: {what}",
                self.node
            ))
        };
        // The node runs as an unprivileged user: let it create its socket in this directory.
        use std::os::unix::fs::PermissionsExt as _;
        if let Err(e) = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)))
        {
            return Err(failed(format!("creating {}: {e}", dir.display())));
        }
        let mut labels: HashMap<String, String> = [
            (LABEL.to_owned(), self.config.service.clone()),
            ("nanoflow.node".to_owned(), self.node.to_owned()),
            (SOCKETS.to_owned(), dir.display().to_string()),
        ]
        .into();
        labels.extend(Owner::this().labels());
        let host = HostConfig {
            network_mode: Some(if self.config.network {
                "bridge".into()
            } else {
                "none".into()
            }),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(self.limits.memory_bytes),
            memory_swap: Some(self.limits.memory_bytes),
            nano_cpus: Some(self.limits.nano_cpus),
            pids_limit: Some(self.config.pids_limit),
            binds: Some(vec![format!("{}:/run/nanoflow", dir.display())]),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            user: Some("65534:65534".into()),
            labels: Some(labels),
            host_config: Some(host),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await;
        let id = match created {
            Ok(created) => created.id,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(self
                    .engine_error(&e)
                    .unwrap_or_else(|| failed(format!("creating it from `{}`: {e}", self.image))));
            }
        };
        if let Err(e) = self.docker.start_container(&id, None).await {
            let _ = self.remove(&id, Some(&dir)).await;
            return Err(self
                .engine_error(&e)
                .unwrap_or_else(|| failed(format!("starting it: {e}"))));
        }
        let socket = dir.join("node.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(stream) = UnixStream::connect(&socket).await {
                let c = Container {
                    id,
                    dir,
                    socket,
                    inflight: AtomicUsize::new(0),
                    broken: AtomicBool::new(false),
                    idle: Mutex::new(vec![stream]),
                    last_used: Mutex::new(Instant::now()),
                };
                return Ok(Arc::new(c));
            }
            let state = match self.docker.inspect_container(&id, None).await {
                Ok(info) => info.state,
                Err(e) if unreachable(&e) => {
                    let _ = self.remove(&id, Some(&dir)).await;
                    return Err(self
                        .engine_error(&e)
                        .unwrap_or_else(|| failed(e.to_string())));
                }
                Err(_) => None,
            };
            if state.as_ref().and_then(|s| s.running) == Some(false) || Instant::now() > deadline {
                let code = state.and_then(|s| s.exit_code);
                let _ = self.remove(&id, Some(&dir)).await;
                return Err(failed(format!(
                    "it did not start serving (exit code {code:?}); is the image built from this binary?"
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The node error for a Docker API error that means the engine is gone (and notes it).
    fn engine_error(&self, e: &bollard::errors::Error) -> Option<NodeError> {
        if !unreachable(e) {
            return None;
        }
        self.engine_down.store(true, Ordering::SeqCst);
        Some(engine_unavailable(self.node, e))
    }

    /// The error of a call whose container failed: why, from the container's state
    /// (OOM-killed, exited, ...), or the engine's absence.
    async fn diagnose(&self, c: &Container, fault: &str) -> NodeError {
        let failed = |why: &str| {
            NodeError::retryable(format!(
                "the container of node `{}` failed: {why}; it is replaced",
                self.node
            ))
        };
        // The engine notices a dead container a moment after its socket closes.
        for _ in 0..50 {
            match self.docker.inspect_container(&c.id, None).await {
                Ok(info) => match info.state {
                    Some(s) if s.oom_killed == Some(true) => {
                        return failed("it ran out of memory (OOM-killed)")
                    }
                    Some(s) if s.running == Some(false) => {
                        return failed(&format!(
                            "it exited with code {}",
                            s.exit_code.unwrap_or(-1)
                        ))
                    }
                    Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    None => break,
                },
                Err(e) => return self.engine_error(&e).unwrap_or_else(|| failed(fault)),
            }
        }
        failed(fault)
    }

    fn remove_later(self: &Arc<Self>, c: Arc<Container>) {
        let pool = self.clone();
        self.removing.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let _ = pool.remove(&c.id, Some(&c.dir)).await;
            pool.removing.fetch_sub(1, Ordering::SeqCst);
            pool.freed.notify_waiters();
        });
    }

    /// Removes container `id` and its socket directory. When the engine does not answer, the
    /// container is kept in `leftovers` for the health task to remove later.
    async fn remove(&self, id: &str, dir: Option<&Path>) -> Result<(), Error> {
        if let Some(dir) = dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        let removed = self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        match removed {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => {
                if unreachable(&e) {
                    self.leftovers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(id.to_owned());
                }
                Err(Error::Container(format!("removing container {id}: {e}")))
            }
        }
    }

    /// Removes containers idle longer than the idle timeout, keeping `min_warm`.
    pub(crate) fn reap_idle(self: &Arc<Self>) {
        let mut list = self.lock();
        let now = Instant::now();
        let mut left = list.len();
        let min_warm = self.config.min_warm;
        let idle_timeout = self.config.idle_timeout;
        list.retain(|c| {
            let last = *c.last_used.lock().unwrap_or_else(|p| p.into_inner());
            let idle =
                c.inflight.load(Ordering::SeqCst) == 0 && now.duration_since(last) > idle_timeout;
            if idle && left > min_warm {
                left -= 1;
                self.remove_later(c.clone());
                false
            } else {
                true
            }
        });
    }

    /// Health check with the engine answering: drops the containers that are no longer
    /// running (`running` lists this runner's running container ids), removes containers the
    /// engine could not remove while it was away, and starts containers up to `min_warm`.
    pub(crate) async fn check(self: &Arc<Self>, running: &HashSet<String>) {
        let dead = {
            let mut list = self.lock();
            let before = list.len();
            for c in list.iter() {
                if !running.contains(&c.id) {
                    c.broken.store(true, Ordering::SeqCst);
                }
            }
            self.prune(&mut list);
            before - list.len()
        };
        if dead > 0 {
            tracing::info!(
                node = self.node,
                removed = dead,
                "removed containers that stopped running"
            );
        }
        let leftovers: Vec<String> =
            std::mem::take(&mut *self.leftovers.lock().unwrap_or_else(|p| p.into_inner()));
        for id in leftovers {
            let _ = self.remove(&id, None).await;
        }
        self.reap_idle();
        self.refill();
    }

    /// Removes every container of this pool, after the starts and removals in progress.
    pub(crate) async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let list: Vec<_> = self.lock().drain(..).collect();
        for c in list {
            let _ = self.remove(&c.id, Some(&c.dir)).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.freed.notified();
            if self.starting.load(Ordering::SeqCst) == 0
                && self.removing.load(Ordering::SeqCst) == 0
            {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
    }
}

/// One call's hold on a container. Dropped before the call completed (the node's timeout
/// fired): the container may be stuck, so it is killed and replaced.
struct Lease<'a> {
    pool: &'a Pool,
    container: Arc<Container>,
    done: bool,
}

impl Lease<'_> {
    async fn exchange(
        &mut self,
        input: Bytes,
        state: Option<Bytes>,
    ) -> Result<Result<(Bytes, Option<Bytes>), NodeError>, String> {
        let c = &self.container;
        let stream = c.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut stream = match stream {
            Some(s) => s,
            None => UnixStream::connect(&c.socket)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?,
        };
        let request = Request {
            input: raw(&input).map_err(|e| format!("bad input JSON: {e}"))?,
            state: state
                .as_deref()
                .map(raw)
                .transpose()
                .map_err(|e| format!("bad state JSON: {e}"))?,
        };
        let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        write_frame(&mut stream, &body)
            .await
            .map_err(|e| format!("sending the input: {e}"))?;
        let frame = read_frame(&mut stream)
            .await
            .map_err(|e| format!("reading the output: {e}"))?;
        let frame = frame.ok_or_else(|| "the connection closed before an answer".to_owned())?;
        let response: Response =
            serde_json::from_slice(&frame).map_err(|e| format!("it answered garbage ({e})"))?;
        c.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(stream);
        Ok(match response {
            Response::Ok { output, state } => {
                Ok((bytes_of(&output), state.as_deref().map(bytes_of)))
            }
            Response::Err(e) => Err(e),
        })
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let c = &self.container;
        *c.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        if !self.done {
            tracing::warn!(node = self.pool.node, container = %c.id, "call abandoned (timeout); replacing the container");
            c.broken.store(true, Ordering::SeqCst);
        }
        c.inflight.fetch_sub(1, Ordering::SeqCst);
        self.pool.freed.notify_waiters();
    }
}

/// What [`remove_orphans`] did.
#[derive(Debug, Default)]
pub(crate) struct Orphans {
    /// Containers of runners that are gone, removed.
    pub(crate) removed: usize,
    /// Containers of live runners (or runners that cannot be checked), left alone.
    pub(crate) kept: usize,
}

/// Removes the containers of `service` whose runner is gone (it crashed or was killed), with
/// their socket directories; never a live runner's (issue 18).
pub(crate) async fn remove_orphans(docker: &Docker, service: &str) -> Result<Orphans, Error> {
    let filters: HashMap<String, Vec<String>> =
        [("label".to_owned(), vec![format!("{LABEL}={service}")])].into();
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| Error::Container(format!("listing containers: {e}")))?;
    let me = Owner::this();
    let mut done = Orphans::default();
    for c in list {
        let Some(id) = c.id else { continue };
        let labels = c.labels.unwrap_or_default();
        match me.check(&labels) {
            Liveness::Gone => {}
            liveness => {
                tracing::debug!(container = %id, ?liveness, owner = labels.get(super::owner::RUNNER).map(String::as_str), "leaving a container of another runner alone");
                done.kept += 1;
                continue;
            }
        }
        let removed = docker
            .remove_container(
                &id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        if removed.is_ok() {
            done.removed += 1;
            if let Some(dir) = labels.get(SOCKETS).map(PathBuf::from) {
                // Only a directory this runtime names (`nanoflow-<node>-<n>`), never another
                // path a label could point at.
                let ours = dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("nanoflow-"));
                if ours {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
    }
    Ok(done)
}
