//! Warm pools of node containers: start, dispatch over the bind-mounted socket, replace on
//! faults, reap when idle, remove at shutdown.

use std::collections::HashMap;
use std::path::PathBuf;
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

use super::protocol::{bytes_of, raw, read_frame, write_frame, Request, Response};
use super::ContainerConfig;
use crate::error::Error;
use crate::node::NodeError;

/// The label every container of this runner carries, with the service name as value.
pub(crate) const LABEL: &str = "nanoflow.service";

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
    config: ContainerConfig,
    docker: Docker,
    service: String,
    containers: Mutex<Vec<Arc<Container>>>,
    starting: AtomicUsize,
    freed: Notify,
    pub(crate) cold_starts: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(
        docker: Docker,
        service: String,
        node: &'static str,
        image: String,
        limits: Limits,
        config: ContainerConfig,
    ) -> Self {
        Self {
            node,
            image,
            limits,
            config,
            docker,
            service,
            containers: Mutex::new(Vec::new()),
            starting: AtomicUsize::new(0),
            freed: Notify::new(),
            cold_starts: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts containers until `min_warm` are up.
    pub(crate) async fn warm(&self) -> Result<(), Error> {
        while self.lock().len() < self.config.min_warm {
            let c = self.start().await?;
            self.lock().push(c);
        }
        Ok(())
    }

    /// The number of live containers.
    pub(crate) fn size(&self) -> usize {
        self.lock().len()
    }

    /// Calls the node once in one of its containers.
    pub(crate) async fn call(
        &self,
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
                let why = self.diagnose(&lease.container, &fault).await;
                lease.container.broken.store(true, Ordering::SeqCst);
                Err(NodeError::retryable(format!(
                    "the container of node `{}` failed: {why}; it is replaced",
                    self.node
                )))
            }
        }
    }

    async fn acquire(&self) -> Result<Arc<Container>, NodeError> {
        loop {
            let notified = self.freed.notified();
            // Decide under the lock, act after it: the guard must not live across an await.
            let start_new = {
                let mut list = self.lock();
                list.retain(|c| {
                    let broken = c.broken.load(Ordering::SeqCst);
                    if broken {
                        self.remove_later(c.clone());
                    }
                    !broken
                });
                let best = list
                    .iter()
                    .filter(|c| c.inflight.load(Ordering::SeqCst) < self.config.concurrency)
                    .min_by_key(|c| c.inflight.load(Ordering::SeqCst))
                    .cloned();
                if let Some(c) = best {
                    c.inflight.fetch_add(1, Ordering::SeqCst);
                    return Ok(c);
                }
                let room =
                    list.len() + self.starting.load(Ordering::SeqCst) < self.config.max_per_node;
                if room {
                    self.starting.fetch_add(1, Ordering::SeqCst);
                }
                room
            };
            if start_new {
                let started = self.start().await;
                self.starting.fetch_sub(1, Ordering::SeqCst);
                let c = started.map_err(|e| {
                    NodeError::retryable(format!(
                        "cannot start a container for node `{}`: {e}",
                        self.node
                    ))
                })?;
                self.cold_starts.fetch_add(1, Ordering::Relaxed);
                c.inflight.fetch_add(1, Ordering::SeqCst);
                self.lock().push(c.clone());
                self.freed.notify_waiters();
                return Ok(c);
            }
            notified.await;
        }
    }

    /// Creates and starts one container, and waits until its node serves on the socket.
    pub(crate) async fn start(&self) -> Result<Arc<Container>, Error> {
        let name = format!(
            "nanoflow-{}-{}",
            self.node.replace('_', "-"),
            crate::run::RunId::new().as_u128() as u64
        );
        let dir = self.config.socket_dir.join(&name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        // The node runs as an unprivileged user: let it create its socket in this directory.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
        let labels: HashMap<String, String> = [
            (LABEL.to_owned(), self.service.clone()),
            ("nanoflow.node".to_owned(), self.node.to_owned()),
        ]
        .into();
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
            .await
            .map_err(|e| {
                Error::Container(format!(
                    "creating a container for node `{}` from `{}`: {e}",
                    self.node, self.image
                ))
            })?;
        let id = created.id;
        if let Err(e) = self.docker.start_container(&id, None).await {
            let _ = self.remove(&id).await;
            return Err(Error::Container(format!(
                "starting the container of node `{}`: {e}",
                self.node
            )));
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
            let state = self
                .docker
                .inspect_container(&id, None)
                .await
                .ok()
                .and_then(|i| i.state);
            if state.as_ref().and_then(|s| s.running) == Some(false) || Instant::now() > deadline {
                let code = state.and_then(|s| s.exit_code);
                let _ = self.remove(&id).await;
                return Err(Error::Container(format!(
                    "the container of node `{}` did not start serving (exit code {code:?}); is the image built from this binary?",
                    self.node
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Why a call failed, from the container's state (OOM-killed, exited, ...).
    async fn diagnose(&self, c: &Container, fault: &str) -> String {
        // The engine notices a dead container a moment after its socket closes.
        for _ in 0..50 {
            match self
                .docker
                .inspect_container(&c.id, None)
                .await
                .ok()
                .and_then(|i| i.state)
            {
                Some(s) if s.oom_killed == Some(true) => {
                    return "it ran out of memory (OOM-killed)".into()
                }
                Some(s) if s.running == Some(false) => {
                    return format!("it exited with code {}", s.exit_code.unwrap_or(-1))
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                None => break,
            }
        }
        fault.to_owned()
    }

    fn remove_later(&self, c: Arc<Container>) {
        let docker = self.docker.clone();
        tokio::spawn(async move {
            let _ = docker
                .remove_container(
                    &c.id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
            let _ = std::fs::remove_dir_all(&c.dir);
        });
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        self.docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| Error::Container(format!("removing container {id}: {e}")))
    }

    /// Removes containers idle longer than the idle timeout, keeping `min_warm`.
    pub(crate) fn reap_idle(&self) {
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

    /// Removes every container of this pool.
    pub(crate) async fn shutdown(&self) {
        let list: Vec<_> = self.lock().drain(..).collect();
        for c in list {
            let _ = self.remove(&c.id).await;
            let _ = std::fs::remove_dir_all(&c.dir);
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

/// Removes the containers a previous runner of `service` left behind (after a crash).
pub(crate) async fn remove_orphans(docker: &Docker, service: &str) -> Result<usize, Error> {
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
    let mut removed = 0;
    for c in list {
        if let Some(id) = c.id {
            if docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await
                .is_ok()
            {
                removed += 1;
            }
        }
    }
    Ok(removed)
}
