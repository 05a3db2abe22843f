//! The OTLP exporter (feature `otel`) against a collector stand-in on 127.0.0.1 that records
//! what it receives: the run and node spans arrive over OTLP/HTTP, in the trace of the
//! request's `traceparent`.
//!
//! `cargo test -p nanoflow --features otel --test otel`
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use nanoflow::prelude::*;
use nanoflow::ServeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[node]
fn double(x: u64) -> u64 {
    x * 2
}
#[node]
fn show(x: u64) -> String {
    format!("= {x}")
}

workflow! {
    #[trigger(http = "/calc")]
    calc: double -> show;
}

/// Accepts OTLP/HTTP posts and passes on (path, content type, body).
async fn collector(
    listener: tokio::net::TcpListener,
    tx: mpsc::UnboundedSender<(String, String, Vec<u8>)>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut raw = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                raw.extend_from_slice(&buf[..n]);
                let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if raw.len() < end + 4 + len {
                    continue;
                }
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                let ctype = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-type:").map(|v| v.trim().to_owned()))
                    .unwrap_or_default();
                let _ = tx.send((path, ctype, raw[end + 4..end + 4 + len].to_vec()));
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
                    .await;
                raw.drain(..end + 4 + len);
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_in_the_callers_trace() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(collector(listener, tx));
    std::env::set_var(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{port}"),
    );
    std::env::set_var("OTEL_SERVICE_NAME", "otel-test");
    let (layer, guard) = nanoflow::observability::otel::layer()
        .expect("the exporter is set up")
        .expect("an endpoint is configured");
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();

    let server = Runner::new()
        .workflow(calc)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: None,
            ..ServeConfig::default()
        })
        .await
        .unwrap();
    let r = support::request(
        server.local_addr(),
        "POST",
        "/calc",
        &[
            ("content-type", "application/json"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
        b"21",
    )
    .await;
    assert_eq!(r.json(), "= 42");
    server.shutdown().await.unwrap();
    tokio::task::spawn_blocking(move || guard.flush())
        .await
        .unwrap();

    let (path, ctype, body) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an export within 20 s")
        .unwrap();
    assert_eq!(path, "/v1/traces");
    assert_eq!(ctype, "application/x-protobuf");
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    let trace_id = 0x4bf92f3577b34da6a3ce929d0e0e4736u128.to_be_bytes();
    assert!(has(&trace_id), "the spans belong to the caller's trace");
    for text in [
        "run calc",
        "node double",
        "node show",
        "otel-test",
        "succeeded",
    ] {
        assert!(has(text.as_bytes()), "`{text}` missing from the export");
    }
}
