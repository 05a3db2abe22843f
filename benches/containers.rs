//! Container isolation costs, in one run:
//! - a warm container dispatch against the same node in-process (one 1-node workflow over HTTP,
//!   one connection, p50 of each; the difference is what a container adds per node call);
//! - a cold start (first call into a fresh container) against `docker run --rm` of a
//!   `FROM scratch` static hello binary;
//! - the node image's size, and build time when new vs when unchanged.
//!
//! `cargo bench -p nanoflow --bench containers` (needs a Docker Engine)
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nanoflow::isolation::{ContainerConfig, IsolationMode};
use nanoflow::prelude::*;
use nanoflow::{DynWorkflow, ServeConfig};

#[node]
fn echo(x: u64) -> u64 {
    x + 1
}

workflow! {
    #[trigger(http = "POST /echo")]
    echoing: echo;
}

static REQUEST: support::Request = support::Request {
    path: "/echo",
    body: "41",
    expect: "HTTP/1.1 200",
};

fn config(mode: IsolationMode, min_warm: usize, service: &str) -> ServeConfig {
    ServeConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        journal: None,
        isolation: mode,
        containers: ContainerConfig {
            service: service.into(),
            min_warm,
            max_per_node: 2,
            ..ContainerConfig::default()
        },
        ..ServeConfig::default()
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some(served) = rt.block_on(Runner::new().workflow(echoing).serve_node_if_requested()) {
        served.unwrap();
        return;
    }
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    println!("container isolation benchmark ({secs} s per latency measurement)");

    // Image: build time when new, when unchanged, size.
    let service = format!("bench{}", nanoflow::RunId::new().as_u128() % 100_000);
    let workflows: Vec<Arc<dyn DynWorkflow>> = vec![Arc::new(echoing)];
    let cc = ContainerConfig {
        service: service.clone(),
        ..ContainerConfig::default()
    };
    let (built, fresh, unchanged) = rt.block_on(async {
        let docker = nanoflow::isolation::connect().await.unwrap();
        let t = Instant::now();
        let built =
            nanoflow::isolation::build_images(&docker, &workflows, IsolationMode::Container, &cc)
                .await
                .unwrap();
        let fresh = t.elapsed();
        let t = Instant::now();
        let again =
            nanoflow::isolation::build_images(&docker, &workflows, IsolationMode::Container, &cc)
                .await
                .unwrap();
        assert!(!again[0].built);
        (built, fresh, t.elapsed())
    });
    let tag = &built[0].tag;
    let size = String::from_utf8(
        Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Size}}", tag])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let size_mb = size.trim().parse::<f64>().unwrap_or(0.0) / 1e6;
    println!(
        "image {tag}: {size_mb:.1} MB (target <= 10 MB); build {:.0} ms new, {:.0} ms unchanged",
        fresh.as_secs_f64() * 1e3,
        unchanged.as_secs_f64() * 1e3
    );

    // Warm dispatch vs in-process.
    let process = rt
        .block_on(Runner::new().workflow(echoing).start(config(
            IsolationMode::Process,
            1,
            &service,
        )))
        .unwrap();
    let container = rt
        .block_on(Runner::new().workflow(echoing).start(config(
            IsolationMode::Container,
            1,
            &service,
        )))
        .unwrap();
    let p = support::load(process.local_addr(), &REQUEST, 1, secs);
    let c = support::load(container.local_addr(), &REQUEST, 1, secs);
    println!(
        "1-node run over HTTP, in-process : p50 {:>6.0} us  p99 {:>6.0} us",
        p.p50_us, p.p99_us
    );
    println!(
        "1-node run over HTTP, container  : p50 {:>6.0} us  p99 {:>6.0} us",
        c.p50_us, c.p99_us
    );
    println!(
        "  added per node call (p50)      : {:>6.0} us (target <= 100 us)",
        c.p50_us - p.p50_us
    );
    rt.block_on(container.shutdown()).unwrap();

    // Cold start: first call into a fresh container, minus the in-process call.
    let mut colds = Vec::new();
    for _ in 0..5 {
        let server = rt
            .block_on(Runner::new().workflow(echoing).start(config(
                IsolationMode::Container,
                0,
                &service,
            )))
            .unwrap();
        let addr = server.local_addr();
        let t = Instant::now();
        let r = rt.block_on(support_request(addr));
        assert!(r);
        colds.push(t.elapsed().as_secs_f64() * 1e3 - p.p50_us / 1e3);
        rt.block_on(server.shutdown()).unwrap();
    }
    rt.block_on(process.shutdown()).unwrap();
    let hello = hello_image();
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let ok = Command::new("docker")
            .args(["run", "--rm", "--network", "none", &hello])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        runs.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (cold, run) = (support::median(colds), support::median(runs));
    println!("cold start of a node container    : {cold:>6.0} ms (median of 5)");
    println!("docker run --rm FROM scratch hello: {run:>6.0} ms (median of 5)");
    println!(
        "  ratio                           : {:>6.2}x (target <= 1.2x)",
        cold / run
    );
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", tag])
        .output();
    std::thread::sleep(Duration::from_millis(10));
}

async fn support_request(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n41").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.starts_with("HTTP/1.1 200")
}

/// A `FROM scratch` image with a static hello binary (built with the system C compiler).
fn hello_image() -> String {
    let dir = std::env::temp_dir().join("nanoflow-bench-hello");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("h.c"), "int main(void){return 0;}\n").unwrap();
    let ok = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("hello"))
        .arg(dir.join("h.c"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "gcc -static failed");
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY hello /hello\nENTRYPOINT [\"/hello\"]\n",
    )
    .unwrap();
    let ok = Command::new("docker")
        .args(["build", "-q", "-t", "nanoflow-bench-hello"])
        .arg(&dir)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "docker build of the hello image failed");
    "nanoflow-bench-hello".into()
}
