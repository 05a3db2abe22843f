//! The external services of the trigger tests: NATS (`NANOFLOW_NATS_URL`) and PostgreSQL
//! (`NANOFLOW_DATABASE_URL`), started by `.ci/services`. A test that cannot reach one fails when
//! `CI` is set, and is skipped with a loud message otherwise.
#![allow(dead_code)]

use std::time::Duration;

fn reachable(url: &str, default_port: u16) -> bool {
    // `scheme://[user@]host:port[/db]`
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split(['/', '?']).next().unwrap_or("");
    let addr = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

fn service(var: &str, what: &str, default_port: u16) -> Option<String> {
    let problem = match std::env::var(var) {
        Ok(url) if !url.is_empty() => {
            if reachable(&url, default_port) {
                return Some(url);
            }
            format!("{what} at `{url}` ({var}) is not reachable")
        }
        _ => format!("{var} is not set"),
    };
    if std::env::var_os("CI").is_some() {
        panic!("{problem}: CI must start {what} (`source .ci/services`)");
    }
    eprintln!("\n!!! SKIPPED: {problem}. Run `source .ci/services` first to test against a real {what}.\n");
    None
}

/// The NATS server, or `None` (test skipped) outside CI.
pub(crate) fn nats() -> Option<String> {
    service("NANOFLOW_NATS_URL", "NATS (with JetStream)", 4222)
}

/// The PostgreSQL server, or `None` (test skipped) outside CI.
pub(crate) fn postgres() -> Option<String> {
    service("NANOFLOW_DATABASE_URL", "PostgreSQL", 5432)
}

/// A new, empty database on the server of `url`; returns its URL.
pub(crate) async fn fresh_database(url: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    let name = format!("nf_test_{}", nanoflow::RunId::new());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    // Replace the database name (the URL's path), keeping any query.
    let host_start = url.find("://").map_or(0, |i| i + 3);
    let (base, query) = match url[host_start..].find('/') {
        Some(i) => {
            let path = &url[host_start + i..];
            (
                &url[..host_start + i],
                path.find('?').map_or("", |q| &path[q..]),
            )
        }
        None => (url, ""),
    };
    format!("{base}/{name}{query}")
}

/// A client on `url` (its connection driven in the background).
pub(crate) async fn connect_db(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

/// A JetStream context on `url`.
pub(crate) async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    async_nats::jetstream::new(client)
}

/// Deletes the streams (and so their consumers) a test's subjects use, for a clean start.
pub(crate) async fn reset_streams(js: &async_nats::jetstream::Context, names: &[&str]) {
    for name in names {
        let _ = js.delete_stream(name).await;
    }
}

/// Polls `check` until it returns `Some`, for at most `secs` seconds.
pub(crate) async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
