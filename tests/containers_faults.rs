//! Container pools under faults, against the real Docker Engine (issue 18): containers killed
//! under load, a second runner of the same service, a runner killed with `kill -9`, the
//! engine going away and coming back, and socket directories of removed containers.
//!
//! As in `tests/containers.rs`, the containers run this very test binary (its
//! `__nanoflow_node_server` test serves a node); `__runner_process` is a whole runner in a
//! process of its own, for the tests that need a second, killable owner.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nanoflow::isolation::{ContainerConfig, IsolationMode};
use nanoflow::prelude::*;
use nanoflow::ServeConfig;
use serde::{Deserialize, Serialize};
use support::{get, post_json};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub cents: u64,
}

#[node(timeout = "5s")]
async fn record(e: Entry) -> Entry {
    e
}
#[node(timeout = "5s")]
async fn debit(e: Entry) -> u64 {
    tokio::time::sleep(Duration::from_millis(20)).await;
    e.cents
}
#[node(timeout = "5s")]
async fn credit(e: Entry) -> u64 {
    tokio::time::sleep(Duration::from_millis(20)).await;
    e.cents
}
#[node(timeout = "5s")]
fn settle(parts: (u64, u64)) -> u64 {
    parts.0 + parts.1
}
#[node]
fn echo(n: u64) -> u64 {
    n
}

workflow! {
    #[trigger(http = "POST /ledger")]
    pub ledger: record -> (debit, credit) -> settle;

    #[trigger(http = "POST /echo")]
    pub echoing: echo;
}

/// Serves one node when this binary runs inside a node container.
#[test]
fn __nanoflow_node_server() {
    if std::env::var_os("NANOFLOW_NODE_SERVE").is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let all = Runner::new().workflow(ledger).workflow(echoing);
    if let Some(served) = rt.block_on(all.serve_node_if_requested()) {
        served.unwrap();
    }
}

/// A runner of `echoing` in a process of its own (`NF_TEST_SERVICE`, `NF_TEST_ADDR`,
/// `NF_TEST_SOCKETS`), serving until it is killed.
#[test]
fn __runner_process() {
    let Some(service) = std::env::var_os("NF_TEST_SERVICE") else {
        return;
    };
    let addr: SocketAddr = std::env::var("NF_TEST_ADDR").unwrap().parse().unwrap();
    let sockets = PathBuf::from(std::env::var_os("NF_TEST_SOCKETS").unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut config = config(&service.to_string_lossy(), &sockets);
        if service.is_empty() {
            // The default: named after this program's file.
            config.containers.service = ContainerConfig::default().service;
        }
        config.addr = addr;
        let _server = Runner::new().workflow(echoing).start(config).await.unwrap();
        std::future::pending::<()>().await;
    });
}

fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide a Docker Engine (.ci/services-docker starts one)"
        );
        eprintln!("\n*** SKIPPED: no Docker Engine answers; container tests did not run ***\n");
    }
    ok
}

fn config(service: &str, sockets: &Path) -> ServeConfig {
    ServeConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        journal: None,
        isolation: IsolationMode::Container,
        containers: ContainerConfig {
            service: service.into(),
            min_warm: 1,
            max_per_node: 2,
            idle_timeout: Duration::from_secs(1),
            health_interval: Duration::from_millis(300),
            socket_dir: sockets.to_owned(),
            entrypoint_args: [
                "--exact",
                "__nanoflow_node_server",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ]
            .map(String::from)
            .to_vec(),
            ..ContainerConfig::default()
        },
        ..ServeConfig::default()
    }
}

/// A fresh socket directory for one test.
fn sockets(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nf-{test}-{}", support::random(1 << 40)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The entries of a socket directory (one per container whose directory is left).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `docker ps -q` (`-a` when `all`) with label filters (`key=value`) and extra filters.
fn containers(all: bool, labels: &[String], filters: &[&str]) -> Vec<String> {
    let mut args = vec!["ps".to_owned(), "-q".to_owned(), "--no-trunc".to_owned()];
    if all {
        args.push("-a".into());
    }
    for l in labels {
        args.extend(["--filter".into(), format!("label={l}")]);
    }
    for f in filters {
        args.extend(["--filter".into(), (*f).to_owned()]);
    }
    let out = Command::new("docker").args(&args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The running containers of `node` in `service` owned by the process `pid`.
fn running(service: &str, node: &str, pid: u32) -> Vec<String> {
    containers(
        false,
        &[
            format!("nanoflow.service={service}"),
            format!("nanoflow.node={node}"),
            format!("nanoflow.pid={pid}"),
        ],
        &[],
    )
}

fn docker_kill(ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let _ = Command::new("docker")
        .arg("kill")
        .args(ids)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The `nanoflow_container_pool_size` of `node` in `/metrics`.
async fn pool_size(addr: SocketAddr, node: &str) -> Option<u64> {
    let metrics = String::from_utf8(get(addr, "/metrics").await.body).unwrap();
    let key = format!("nanoflow_container_pool_size{{node=\"{node}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits (at most `within`) until `check` holds.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

// Issue 18, item 1: killing the fan-out nodes' containers together under load used to leave a
// pool with a `starting` count that never came back down (a run cancelled during a start lost
// the decrement), and later calls waited forever; cancelled starts left containers `Created`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_recover_from_containers_killed_under_load() {
    if !docker_available() {
        return;
    }
    const SERVICE: &str = "nftest-ledger";
    let dir = sockets("ledger");
    let server = Runner::new()
        .workflow(ledger)
        .start(config(SERVICE, &dir))
        .await
        .expect("server starts");
    let addr = server.local_addr();
    let me = std::process::id();
    let body = r#"{"id":1,"cents":250}"#;
    assert_eq!(post_json(addr, "/ledger", body).await.json(), 500);

    // 8 clients in a loop while both fan-out nodes' containers are killed together, 4 times.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                statuses.push(post_json(addr, "/ledger", body).await.status);
            }
            statuses
        }));
    }
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut victims = running(SERVICE, "debit", me);
        victims.extend(running(SERVICE, "credit", me));
        docker_kill(&victims);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut statuses = Vec::new();
    for l in load {
        statuses.extend(l.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    eprintln!(
        "under the kills: {ok} of {} requests answered 200",
        statuses.len()
    );
    // The health task (every 300 ms here) replaces the containers of the last kill.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The service answers within the node's timeout (5 s) ...
    let started = Instant::now();
    let r = post_json(addr, "/ledger", body).await;
    let took = started.elapsed();
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!(500)),
        "after the kills"
    );
    assert!(took < Duration::from_secs(5), "answered in {took:?}");
    // ... and every pool is back to `min_warm` (1), each with one running container.
    for node in ["record", "debit", "credit", "settle"] {
        let back = eventually(Duration::from_secs(20), || async {
            pool_size(addr, node).await == Some(1) && running(SERVICE, node, me).len() == 1
        })
        .await;
        assert!(
            back,
            "pool of `{node}`: size {:?}, running {:?}",
            pool_size(addr, node).await,
            running(SERVICE, node, me)
        );
    }
    let created = containers(
        true,
        &[format!("nanoflow.service={SERVICE}")],
        &["status=created"],
    );
    assert!(created.is_empty(), "containers left `Created`: {created:?}");

    server.shutdown().await.unwrap();
    let left = containers(
        true,
        &[
            format!("nanoflow.service={SERVICE}"),
            format!("nanoflow.pid={me}"),
        ],
        &[],
    );
    assert!(left.is_empty(), "containers left after shutdown: {left:?}");
    assert_eq!(
        entries(&dir),
        Vec::<String>::new(),
        "socket directories left"
    );
    std::fs::remove_dir(&dir).unwrap();
}

// Issue 18, item 1: a call that finds its pool full waits at most the slot bound, then fails
// with a retryable `503 container_pool_busy` (and a log line), instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_answers_503_after_the_slot_wait() {
    if !docker_available() {
        return;
    }
    const SERVICE: &str = "nftest-busy";
    let dir = sockets("busy");
    let mut config = config(SERVICE, &dir);
    config.containers.max_per_node = 1;
    config.containers.concurrency = 1;
    config.containers.slot_wait = Duration::from_millis(300);
    let server = Runner::new()
        .workflow(echoing)
        .start(config)
        .await
        .expect("server starts");
    let addr = server.local_addr();
    // Hold the only slot: freeze the container, so its call does not end.
    let id = running(SERVICE, "echo", std::process::id()).pop().unwrap();
    assert!(Command::new("docker")
        .args(["pause", &id])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    let held = tokio::spawn(async move { post_json(addr, "/echo", "1").await.status });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let r = post_json(addr, "/echo", "2").await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "container_pool_busy");
    assert!(r.header("retry-after").is_some());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(Command::new("docker")
        .args(["unpause", &id])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    assert_eq!(held.await.unwrap(), 200);
    server.shutdown().await.unwrap();
    assert_eq!(entries(&dir), Vec::<String>::new());
    std::fs::remove_dir(&dir).unwrap();
}

/// A runner process, killed (`SIGKILL`) when dropped, so a failed test leaves none behind.
struct RunnerProcess(std::process::Child);

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A runner of `service` in a process of its own, serving on its returned address.
async fn runner_process(service: &str, dir: &Path) -> (RunnerProcess, SocketAddr) {
    runner_program(&std::env::current_exe().unwrap(), service, dir).await
}

/// A runner of `service` (empty: the default name) run by `program` (this test binary or a
/// copy of it).
async fn runner_program(program: &Path, service: &str, dir: &Path) -> (RunnerProcess, SocketAddr) {
    let addr = support::free_addr();
    let mut child = Command::new(program)
        .args(["--exact", "__runner_process", "--nocapture", "-q"])
        .env("NF_TEST_SERVICE", service)
        .env("NF_TEST_ADDR", addr.to_string())
        .env("NF_TEST_SOCKETS", dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    support::wait_ready(addr, &mut child).await;
    (RunnerProcess(child), addr)
}

// Issue 18, item 7 (and 9: socket directories): a runner removes at start only the containers
// whose owner is gone, never those of another live runner of the same service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_removes_only_containers_whose_owner_is_gone() {
    if !docker_available() {
        return;
    }
    const SERVICE: &str = "nftest-copy";
    let dir = sockets("copy");
    let (first, first_addr) = runner_process(SERVICE, &dir).await;
    let pid = first.0.id();
    let theirs = running(SERVICE, "echo", pid);
    assert_eq!(theirs.len(), 1, "the first runner's warm container");
    assert_eq!(entries(&dir).len(), 1);

    // A second copy of the service starts: the first one's container stays and serves.
    let second = Runner::new()
        .workflow(echoing)
        .start(config(SERVICE, &dir))
        .await
        .expect("second runner starts");
    assert_eq!(
        running(SERVICE, "echo", pid),
        theirs,
        "the live runner's container"
    );
    assert_eq!(post_json(first_addr, "/echo", "7").await.json(), 7);
    assert_eq!(post_json(second.local_addr(), "/echo", "8").await.json(), 8);
    let mine = running(SERVICE, "echo", std::process::id());
    assert_eq!(mine.len(), 1);

    // The first runner crashes: its container outlives it, until the next runner starts.
    drop(first);
    assert_eq!(running(SERVICE, "echo", pid), theirs);
    let third = Runner::new()
        .workflow(echoing)
        .start(config(SERVICE, &dir))
        .await
        .expect("third runner starts");
    let left = containers(
        true,
        &[
            format!("nanoflow.service={SERVICE}"),
            format!("nanoflow.pid={pid}"),
        ],
        &[],
    );
    assert!(left.is_empty(), "the crashed runner's containers: {left:?}");
    assert_eq!(
        running(SERVICE, "echo", std::process::id()).len(),
        2,
        "the second runner's container stays beside the third's"
    );
    assert_eq!(post_json(second.local_addr(), "/echo", "9").await.json(), 9);
    // One socket directory per live container: the crashed runner's is gone.
    assert_eq!(entries(&dir).len(), 2, "{:?}", entries(&dir));

    second.shutdown().await.unwrap();
    third.shutdown().await.unwrap();
    assert_eq!(entries(&dir), Vec::<String>::new());
    std::fs::remove_dir(&dir).unwrap();
}

// Issue 18, item 9: a container that fails to start leaves no socket directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_no_socket_directory() {
    if !docker_available() {
        return;
    }
    let dir = sockets("failed");
    let mut config = config("nftest-failed", &dir);
    // The container runs a test that does not exist: it exits at once, never serving.
    config.containers.entrypoint_args =
        ["--exact", "no_such_test", "-q"].map(String::from).to_vec();
    let err = Runner::new()
        .workflow(echoing)
        .start(config)
        .await
        .expect_err("the node never serves");
    assert!(err.to_string().contains("did not start serving"), "{err}");
    assert_eq!(entries(&dir), Vec::<String>::new());
    std::fs::remove_dir(&dir).unwrap();
}

/// A Unix-socket proxy to the real Docker Engine that can be cut (connections closed, new
/// ones refused) and restored: an engine going away, as seen by the runner.
struct EngineProxy {
    path: PathBuf,
    up: tokio::sync::watch::Sender<bool>,
}

impl EngineProxy {
    fn start(path: PathBuf) -> Self {
        let engine = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        let (up, mut rx) = tokio::sync::watch::channel(true);
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let at = path.clone();
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                let Some(l) = &listener else {
                    // Cut: wait to be restored, then listen again.
                    if rx.wait_for(|up| *up).await.is_err() {
                        return;
                    }
                    let _ = std::fs::remove_file(&at);
                    listener = Some(tokio::net::UnixListener::bind(&at).unwrap());
                    continue;
                };
                tokio::select! {
                    accepted = l.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        let engine = engine.clone();
                        let mut cut = rx.clone();
                        tokio::spawn(async move {
                            let Ok(mut server) = tokio::net::UnixStream::connect(&engine).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                _ = cut.wait_for(|up| !*up) => {}
                            }
                        });
                    }
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if !*rx.borrow_and_update() {
                            listener = None;
                            let _ = std::fs::remove_file(&at);
                        }
                    }
                }
            }
        });
        Self { path, up }
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

// Issue 18, item 8: dead containers are replaced without a request, an unreachable engine is
// a `503` with `Retry-After` (not `500 node_failed`), and the pools are refilled when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_follow_the_engine_going_away_and_coming_back() {
    if !docker_available() {
        return;
    }
    const SERVICE: &str = "nftest-engine";
    let dir = sockets("engine");
    let proxy = EngineProxy::start(dir.join("engine.sock"));
    let mut config = config(SERVICE, &dir);
    config.containers.engine = Some(format!("unix://{}", proxy.path.display()));
    let server = Runner::new()
        .workflow(echoing)
        .start(config)
        .await
        .expect("server starts");
    let addr = server.local_addr();
    let me = std::process::id();
    assert_eq!(post_json(addr, "/echo", "1").await.json(), 1);

    // The engine is fine and the container dies: the health task replaces it, no request.
    let before = running(SERVICE, "echo", me);
    assert_eq!(before.len(), 1);
    docker_kill(&before);
    let refilled = eventually(Duration::from_secs(10), || async {
        let now = running(SERVICE, "echo", me);
        now.len() == 1 && now != before && pool_size(addr, "echo").await == Some(1)
    })
    .await;
    assert!(
        refilled,
        "running {:?}, pool {:?}",
        running(SERVICE, "echo", me),
        pool_size(addr, "echo").await
    );
    let gone = eventually(Duration::from_secs(5), || async {
        containers(
            true,
            &[
                format!("nanoflow.pid={me}"),
                format!("nanoflow.service={SERVICE}"),
            ],
            &[],
        )
        .len()
            == 1
    })
    .await;
    assert!(gone, "the dead container is removed");
    let one_dir = eventually(Duration::from_secs(5), || async {
        entries(&dir).len() == 2 // the live container's and the proxy's socket
    })
    .await;
    assert!(one_dir, "socket directories: {:?}", entries(&dir));

    // The engine goes away, its containers with it: 503 + Retry-After, a stable code.
    proxy.cut();
    docker_kill(&running(SERVICE, "echo", me));
    for n in 0..3 {
        let r = post_json(addr, "/echo", "2").await;
        assert_eq!(r.status, 503, "{n}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["error"]["code"], "container_engine_unavailable");
        assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    }

    // It comes back: the pool is checked and refilled without a request, then serves.
    proxy.restore();
    let refilled = eventually(Duration::from_secs(15), || async {
        running(SERVICE, "echo", me).len() == 1 && pool_size(addr, "echo").await == Some(1)
    })
    .await;
    assert!(refilled, "running {:?}", running(SERVICE, "echo", me));
    assert_eq!(post_json(addr, "/echo", "3").await.json(), 3);
    let all = eventually(Duration::from_secs(5), || async {
        containers(
            true,
            &[
                format!("nanoflow.pid={me}"),
                format!("nanoflow.service={SERVICE}"),
            ],
            &[],
        )
        .len()
            == 1
    })
    .await;
    assert!(
        all,
        "the containers killed while the engine was away are removed"
    );

    server.shutdown().await.unwrap();
    assert_eq!(entries(&dir), vec!["engine.sock".to_owned()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

// Issue 18, item 7: services were named by their binary's name cut at the first `-`, so
// `nf-newcomer` starting removed the live containers of `nf-other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_sharing_a_name_prefix_keep_their_containers() {
    if !docker_available() {
        return;
    }
    let dir = sockets("prefix");
    let programs = dir.join("bin");
    std::fs::create_dir_all(&programs).unwrap();
    let [other, newcomer] = ["nf-other", "nf-newcomer"].map(|name| {
        let program = programs.join(name);
        std::fs::copy(std::env::current_exe().unwrap(), &program).unwrap();
        program
    });
    let (first, first_addr) = runner_program(&other, "", &dir).await;
    let theirs = running("nf-other", "echo", first.0.id());
    assert_eq!(theirs.len(), 1, "named by the whole program name");

    let (second, second_addr) = runner_program(&newcomer, "", &dir).await;
    assert_eq!(running("nf-newcomer", "echo", second.0.id()).len(), 1);
    assert_eq!(running("nf-other", "echo", first.0.id()), theirs);
    assert_eq!(post_json(first_addr, "/echo", "1").await.json(), 1);
    assert_eq!(post_json(second_addr, "/echo", "2").await.json(), 2);

    // The runners are killed; their containers go with this test.
    let pids = [first.0.id(), second.0.id()];
    drop((first, second));
    for pid in pids {
        let ids = containers(true, &[format!("nanoflow.pid={pid}")], &[]);
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .status();
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
