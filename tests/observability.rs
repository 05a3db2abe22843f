//! Observability and the operations surface over real loopback HTTP: `/metrics` after runs,
//! the run and node spans (seen by a recording `tracing` layer) with trace context from
//! `traceparent`, the admin token (401 without, 200 with, the login cookie), refusal of a
//! non-loopback address without a token, the live event stream, and run history paging over
//! 100,000 journaled runs.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nanoflow::prelude::*;
use nanoflow::{AdminToken, ServeConfig, Server};
use serde_json::Value;
use support::{get, get_with, post_json, request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static FLAKY: AtomicU32 = AtomicU32::new(0);

#[node]
fn double(x: u64) -> u64 {
    x * 2
}
#[node]
fn check(x: u64) -> Result<u64, NodeError> {
    if x > 100 {
        return Err(NodeError::permanent("too big"));
    }
    Ok(x)
}
#[node(retries = 2, backoff = "1ms")]
fn wobbly(x: u64) -> Result<u64, NodeError> {
    if FLAKY.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
        return Err(NodeError::retryable("try again"));
    }
    Ok(x)
}
#[node]
fn show(x: u64) -> String {
    format!("= {x}")
}

#[node]
fn hello(_unit: ()) -> String {
    "hello".into()
}

#[node]
fn ticked(t: Tick) -> i64 {
    t.fired_ms - t.scheduled_ms
}

workflow! {
    #[trigger(cron = "* * * * * *")]
    every_second: ticked;
}

workflow! {
    #[trigger(http = "GET /")]
    home: hello;

    #[trigger(http = "POST /")]
    posted: hello;
}

workflow! {
    /// Doubles, checks, and shows a number.
    #[trigger(http = "/calc")]
    calc: double -> check -> show;

    #[trigger(http = "/wobble")]
    wobble: wobbly -> show;
}

fn temp_journal() -> PathBuf {
    std::env::temp_dir()
        .join(format!("nanoflow-obs-{}", nanoflow::RunId::new()))
        .join("journal.db")
}

fn config(journal: Option<PathBuf>) -> ServeConfig {
    ServeConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        journal,
        ..ServeConfig::default()
    }
}

async fn start(config: ServeConfig) -> Server {
    Runner::new()
        .workflow(calc)
        .workflow(wobble)
        .start(config)
        .await
        .expect("server starts")
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line_start)
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no `{line_start}` in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_runs_nodes_retries_and_commits() {
    let server = start(config(Some(temp_journal()))).await;
    let addr = server.local_addr();
    for x in [1, 2, 3] {
        assert_eq!(post_json(addr, "/calc", &x.to_string()).await.status, 200);
    }
    assert_eq!(post_json(addr, "/calc", "70").await.status, 500);
    FLAKY.store(0, Ordering::SeqCst);
    assert_eq!(post_json(addr, "/wobble", "5").await.status, 200);

    let r = get(addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(r.body).unwrap();
    assert_eq!(
        metric(&text, r#"nanoflow_runs_started_total{workflow="calc"}"#),
        4.0
    );
    assert_eq!(
        metric(
            &text,
            r#"nanoflow_runs_finished_total{workflow="calc",status="succeeded"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            r#"nanoflow_runs_finished_total{workflow="calc",status="failed"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(&text, r#"nanoflow_runs_in_flight{workflow="calc"}"#),
        0.0
    );
    assert_eq!(
        metric(
            &text,
            r#"nanoflow_run_duration_seconds_count{workflow="calc"}"#
        ),
        4.0
    );
    assert_eq!(
        metric(
            &text,
            r#"nanoflow_node_attempts_total{workflow="calc",node="check",outcome="failed"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"nanoflow_node_attempts_total{workflow="calc",node="show",outcome="succeeded"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            r#"nanoflow_node_duration_seconds_count{workflow="calc",node="double"}"#
        ),
        4.0
    );
    assert_eq!(
        metric(
            &text,
            r#"nanoflow_node_duration_seconds_bucket{workflow="calc",node="double",le="+Inf"}"#
        ),
        4.0
    );
    assert_eq!(
        metric(
            &text,
            r#"nanoflow_node_retries_total{workflow="wobble",node="wobbly"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"nanoflow_node_attempts_total{workflow="wobble",node="wobbly",outcome="failed"}"#
        ),
        1.0
    );
    assert!(metric(&text, "nanoflow_journal_commit_seconds_count") >= 5.0);
    assert!(metric(&text, "nanoflow_journal_writes_total") >= 10.0);
    // Several writes share a transaction at most: never more transactions than writes.
    let transactions = metric(&text, "nanoflow_journal_transactions_total");
    assert!(transactions >= 1.0, "{text}");
    assert!(transactions <= metric(&text, "nanoflow_journal_writes_total"));
    // The SQLite journal syncs its WAL itself, at most once per transaction, and times it.
    let syncs = metric(&text, "nanoflow_journal_syncs_total");
    assert!(syncs >= 1.0 && syncs <= transactions, "{text}");
    assert!(
        metric(&text, "nanoflow_journal_sync_seconds_total") > 0.0,
        "{text}"
    );
    assert_eq!(metric(&text, "nanoflow_journal_failed_writes_total"), 0.0);
    assert_eq!(metric(&text, r#"nanoflow_run_slots{state="used"}"#), 0.0);
    assert!(text.contains("# TYPE nanoflow_node_duration_seconds histogram"));
    // Every sample line is `name{labels} value` or `name value`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("nanoflow_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    server.shutdown().await.unwrap();

    // Metrics off: nothing recorded, and the endpoint says so.
    let server = start(ServeConfig {
        metrics: false,
        ..config(None)
    })
    .await;
    let r = get(server.local_addr(), "/metrics").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "metrics_disabled");
    server.shutdown().await.unwrap();
}

/// One span as a recording layer saw it.
#[derive(Debug, Clone, Default)]
struct Recorded {
    name: &'static str,
    fields: HashMap<String, String>,
    parent: Option<u64>,
    id: u64,
}

/// Records every span (with its fields, later `record`s included) in `SPANS`.
struct Recorder;

static SPANS: OnceLock<Mutex<Vec<Recorded>>> = OnceLock::new();

struct Fields<'a>(&'a mut HashMap<String, String>);
impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for Recorder
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut r = Recorded {
            name: attrs.metadata().name(),
            id: id.into_u64(),
            parent: ctx
                .span(id)
                .and_then(|s| s.parent())
                .map(|p| p.id().into_u64()),
            ..Recorded::default()
        };
        attrs.record(&mut Fields(&mut r.fields));
        SPANS.get_or_init(Default::default).lock().unwrap().push(r);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut spans = SPANS.get_or_init(Default::default).lock().unwrap();
        if let Some(r) = spans.iter_mut().rev().find(|r| r.id == id.into_u64()) {
            values.record(&mut Fields(&mut r.fields));
        }
    }
}

fn spans_of(run_id: &str) -> Vec<Recorded> {
    SPANS
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.fields.get("run_id").map(String::as_str) == Some(run_id))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_carry_run_node_attempt_and_outcome() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Recorder));
    let server = start(config(Some(temp_journal()))).await;
    let addr = server.local_addr();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    let r = request(
        addr,
        "POST",
        "/calc",
        &[
            ("content-type", "application/json"),
            ("traceparent", traceparent),
            ("prefer", "respond-async"),
        ],
        b"21",
    )
    .await;
    let run_id = r.json()["run_id"].as_str().unwrap().to_owned();
    let mut spans = Vec::new();
    for _ in 0..200 {
        spans = spans_of(&run_id);
        if spans
            .iter()
            .any(|s| s.name == "run" && s.fields.contains_key("outcome"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let run = spans.iter().find(|s| s.name == "run").expect("a run span");
    assert_eq!(run.fields["workflow"], "calc");
    assert_eq!(run.fields["outcome"], "succeeded");
    assert_eq!(run.fields["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(run.fields["parent_span_id"], "00f067aa0ba902b7");
    let nodes: Vec<_> = spans.iter().filter(|s| s.name == "node").collect();
    let names: Vec<&str> = nodes.iter().map(|s| s.fields["node"].as_str()).collect();
    assert_eq!(names, ["double", "check", "show"]);
    for n in &nodes {
        assert_eq!(n.fields["workflow"], "calc");
        assert_eq!(n.fields["attempt"], "1");
        assert_eq!(n.fields["outcome"], "succeeded");
        assert_eq!(
            n.parent,
            Some(run.id),
            "a node span is a child of its run's span"
        );
    }

    // A retried attempt and a failed run.
    FLAKY.store(0, Ordering::SeqCst);
    let r = request(
        addr,
        "POST",
        "/wobble",
        &[
            ("content-type", "application/json"),
            ("prefer", "respond-async"),
        ],
        b"3",
    )
    .await;
    let wobble_id = r.json()["run_id"].as_str().unwrap().to_owned();
    let failed = post_json(addr, "/calc", "99").await;
    let failed_id = failed.json()["error"]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut attempts = Vec::new();
    for _ in 0..200 {
        attempts = spans_of(&wobble_id)
            .into_iter()
            .filter(|s| s.name == "node" && s.fields["node"] == "wobbly")
            .map(|s| {
                (
                    s.fields["attempt"].clone(),
                    s.fields.get("outcome").cloned().unwrap_or_default(),
                )
            })
            .collect::<Vec<_>>();
        if attempts.len() == 2 && !attempts[1].1.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        attempts,
        [
            ("1".to_owned(), "retrying".to_owned()),
            ("2".to_owned(), "succeeded".to_owned())
        ]
    );
    let spans = spans_of(&failed_id);
    let run = spans.iter().find(|s| s.name == "run").unwrap();
    assert_eq!(run.fields["outcome"], "failed");
    assert_eq!(run.fields["error_code"], "node_failed");
    assert!(
        !run.fields.contains_key("trace_id"),
        "no traceparent, no trace id"
    );
    let check = spans
        .iter()
        .find(|s| s.fields.get("node").map(String::as_str) == Some("check"))
        .unwrap();
    assert_eq!(check.fields["outcome"], "failed");
    assert_eq!(check.fields["error_kind"], "permanent");
    assert_eq!(check.fields["error"], "too big");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_in_process_run_has_its_span_too() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Recorder));
    assert_eq!(calc.run(7).await.unwrap(), "= 14");
    let spans = SPANS.get_or_init(Default::default).lock().unwrap().clone();
    let run = spans
        .iter()
        .rev()
        .find(|s| {
            s.name == "run"
                && s.fields.contains_key("outcome")
                && spans.iter().any(|n| {
                    n.parent == Some(s.id)
                        && n.fields.get("node").map(String::as_str) == Some("show")
                })
        })
        .expect("a finished run span with its nodes");
    assert_eq!(run.fields["workflow"], "calc");
    assert_eq!(run.fields["outcome"], "succeeded");
}

const TOKEN: &str = "obs-test-token-1234";

#[tokio::test]
async fn the_admin_token_guards_the_operations_surface() {
    let server = start(ServeConfig {
        admin_token: Some(AdminToken::new(TOKEN).unwrap()),
        ..config(Some(temp_journal()))
    })
    .await;
    let addr = server.local_addr();
    let bearer = format!("Bearer {TOKEN}");
    for path in [
        "/",
        "/runs",
        "/metrics",
        "/events",
        "/workflows",
        "/ui/config.json",
    ] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json()["error"]["code"], "unauthorized", "{path}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
        let r = get_with(addr, path, &[("authorization", "Bearer wrong")]).await;
        assert_eq!(r.status, 401, "{path}");
        if path != "/events" {
            let r = get_with(addr, path, &[("authorization", &bearer)]).await;
            assert_eq!(r.status, 200, "{path}");
        }
    }
    // The trigger, the health check and the static files are not guarded.
    assert_eq!(post_json(addr, "/calc", "1").await.status, 200);
    assert_eq!(get(addr, "/healthz").await.status, 200);
    assert_eq!(get(addr, "/ui/app.js").await.status, 200);
    let r = request(
        addr,
        "POST",
        "/runs/01a2000000000000000000000000abcd/retry",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);

    // A browser is sent to the login page, which sets an HttpOnly, SameSite=Strict cookie.
    let r = get_with(addr, "/", &[("accept", "text/html,application/xhtml+xml")]).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login"));
    let page = get(addr, "/login").await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("name=\"token\""));
    let wrong = request(
        addr,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"token=nope",
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    let form = request(
        addr,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("token={TOKEN}").as_bytes(),
    )
    .await;
    assert_eq!(form.status, 303);
    let cookie = form.header("set-cookie").unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    for path in ["/", "/runs", "/metrics", "/workflows"] {
        assert_eq!(
            get_with(addr, path, &[("cookie", &pair)]).await.status,
            200,
            "{path}"
        );
    }
    let json = request(
        addr,
        "POST",
        "/login",
        &[("content-type", "application/json")],
        format!(r#"{{"token":"{TOKEN}"}}"#).as_bytes(),
    )
    .await;
    assert_eq!(json.status, 204);
    assert!(json.header("set-cookie").is_some());
    // A cookie from another site's page may not change anything.
    let r = request(
        addr,
        "POST",
        "/runs/01a2000000000000000000000000abcd/retry",
        &[("cookie", &pair), ("origin", "http://evil.example")],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "cross_origin");
    let r = get_with(addr, "/runs", &[("cookie", "nanoflow_admin=forged")]).await;
    assert_eq!(r.status, 401);
    let out = request(addr, "POST", "/logout", &[], b"").await;
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_non_loopback_address_needs_a_token() {
    let open = ServeConfig {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        journal: None,
        ..ServeConfig::default()
    };
    let err = Runner::new()
        .workflow(calc)
        .start(open.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a loopback address")
            && err.contains("NANOFLOW_ADMIN_TOKEN")
            && err.contains("--insecure-admin"),
        "{err}"
    );
    // The command line refuses it the same way, before serving anything.
    let err = Runner::new()
        .workflow(calc)
        .run_cli(["calc", "serve", "--addr", "0.0.0.0:0", "--journal", "off"])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a loopback address"), "{err}");
    // With a token, or explicitly insecure, it starts.
    for config in [
        ServeConfig {
            admin_token: Some(AdminToken::new(TOKEN).unwrap()),
            ..open.clone()
        },
        ServeConfig {
            insecure_admin: true,
            ..open.clone()
        },
    ] {
        let server = Runner::new().workflow(calc).start(config).await.unwrap();
        let port = server.local_addr().port();
        assert_eq!(
            get(SocketAddr::from(([127, 0, 0, 1], port)), "/healthz")
                .await
                .status,
            200
        );
        server.shutdown().await.unwrap();
    }
    assert!(AdminToken::new("").is_err());
    assert!(AdminToken::new("two words").is_err());
}

/// Reads server-sent events until `done` says stop; returns (event, data) pairs.
async fn read_events(
    stream: &mut tokio::net::TcpStream,
    done: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let mut buf = Vec::new();
    let mut events = Vec::new();
    let mut chunk = vec![0u8; 8192];
    while !done(&events) {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an event within 10 s")
            .unwrap();
        assert!(n > 0, "the event stream closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        events = text
            .split("\n\n")
            .filter_map(|frame| {
                let event = frame.lines().find_map(|l| l.strip_prefix("event: "))?;
                let data = frame.lines().find_map(|l| l.strip_prefix("data: "))?;
                Some((event.to_owned(), serde_json::from_str(data).ok()?))
            })
            .collect();
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_delivers_run_and_step_events() {
    let server = start(config(Some(temp_journal()))).await;
    let addr = server.local_addr();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET /events HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let ready = read_events(&mut stream, |e| !e.is_empty()).await;
    assert_eq!(ready[0].0, "ready");
    let r = post_json(addr, "/calc", "4").await;
    assert_eq!(r.json(), "= 8");
    let events = read_events(&mut stream, |e| e.iter().any(|(k, _)| k == "run_finished")).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "run_started",
            "step_finished",
            "step_finished",
            "step_finished",
            "run_finished"
        ]
    );
    let run_id = events[0].1["run_id"].as_str().unwrap();
    assert_eq!(events[0].1["workflow"], "calc");
    assert_eq!(events[1].1["step"], "double");
    assert_eq!(events[1].1["status"], "succeeded");
    assert_eq!(events[1].1["attempt"], 1);
    assert_eq!(events[3].1["step"], "show");
    assert_eq!(events[4].1["run_id"], run_id);
    assert_eq!(events[4].1["status"], "succeeded");
    let metrics = String::from_utf8(get(addr, "/metrics").await.body).unwrap();
    assert_eq!(metric(&metrics, "nanoflow_event_listeners"), 1.0);
    // Shutting down ends open streams instead of waiting for them.
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown with a listener connected")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_history_pages_over_100k_runs() {
    let path = temp_journal();
    drop(nanoflow::journal::Journal::open(&path).unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO runs (id, workflow, status, input, output, error, created_ms, finished_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .unwrap();
            for i in 0..100_000u64 {
                let created = now - 100_000 + i;
                let id = format!("{:012x}{:020x}", created, i);
                let (workflow, status) = match i % 10 {
                    0 => ("wobble", "failed"),
                    1..=3 => ("wobble", "succeeded"),
                    9 => ("calc", "failed"),
                    _ => ("calc", "succeeded"),
                };
                let error = (status == "failed").then(|| {
                    format!(r#"{{"code":"node_failed","message":"bad input {i}","node":"check"}}"#)
                });
                insert
                    .execute(rusqlite::params![
                        id,
                        workflow,
                        status,
                        i.to_string().into_bytes(),
                        (status == "succeeded").then(|| b"\"ok\"".to_vec()),
                        error,
                        created as i64,
                        created as i64 + 1
                    ])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        // The list's queries walk an index in id order and stop at the page: no full scan, no
        // sort. A status other than `succeeded` is read from the index of the runs that have not
        // succeeded (the store's query states that index's condition, as here).
        for filter in [
            "",
            "workflow = 'calc' AND",
            "status = 'succeeded' AND",
            "status = 'failed' AND status <> 'succeeded' AND",
            "workflow = 'calc' AND status = 'failed' AND status <> 'succeeded' AND",
        ] {
            let sql = format!("EXPLAIN QUERY PLAN SELECT id FROM runs WHERE {filter} id < 'f' ORDER BY id DESC LIMIT 50");
            let plan: Vec<String> = conn
                .prepare(&sql)
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let plan = plan.join(" | ");
            assert!(
                plan.contains("USING") && !plan.contains("TEMP B-TREE"),
                "{filter}: {plan}"
            );
            if filter.starts_with("status = 'failed'") {
                assert!(plan.contains("runs_not_succeeded"), "{filter}: {plan}");
            }
        }
    }
    let server = start(config(Some(path))).await;
    let addr = server.local_addr();
    let mut seen = std::collections::HashSet::new();
    let mut before = String::new();
    let mut last: Option<String> = None;
    for _ in 0..5 {
        let page = get(addr, &format!("/runs?limit=100&before={before}"))
            .await
            .json();
        let runs = page["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 100);
        for r in runs {
            let id = r["run_id"].as_str().unwrap().to_owned();
            if let Some(prev) = &last {
                assert!(&id < prev, "newest first");
            }
            assert!(seen.insert(id.clone()), "pages do not overlap");
            last = Some(id);
        }
        before = page["next_before"].as_str().unwrap().to_owned();
    }
    // Filters combine; each page is still one page.
    let page = get(addr, "/runs?workflow=calc&status=failed&limit=50")
        .await
        .json();
    let runs = page["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 50);
    assert!(runs
        .iter()
        .all(|r| r["workflow"] == "calc" && r["status"] == "failed"));
    let next = page["next_before"].as_str().unwrap();
    let page2 = get(
        addr,
        &format!("/runs?workflow=calc&status=failed&limit=50&before={next}"),
    )
    .await
    .json();
    assert_eq!(page2["runs"].as_array().unwrap().len(), 50);
    assert!(page2["runs"][0]["run_id"].as_str().unwrap() < next);
    // Search: a run id prefix, and error text.
    let newest = get(addr, "/runs?limit=1").await.json()["runs"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let found = get(addr, &format!("/runs?q={}", &newest[..28]))
        .await
        .json();
    assert_eq!(found["runs"][0]["run_id"], newest.as_str());
    let found = get(addr, "/runs?q=bad%20input%2099990&limit=5")
        .await
        .json();
    let runs = found["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{found}");
    assert_eq!(runs[0]["error"]["message"], "bad input 99990");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_get_root_trigger_keeps_root_and_the_dashboard_moves_to_ui() {
    let server = Runner::new()
        .workflow(home)
        .start(config(None))
        .await
        .unwrap();
    let addr = server.local_addr();
    let r = get(addr, "/").await;
    assert_eq!(r.json(), "hello");
    let r = get(addr, "/ui").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    server.shutdown().await.unwrap();
    // Without one, `/` is the dashboard, and a trigger on another method shares the path.
    let server = Runner::new()
        .workflow(posted)
        .start(config(None))
        .await
        .unwrap();
    let r = get(server.local_addr(), "/").await;
    assert!(String::from_utf8_lossy(&r.body).contains("/ui/app.js"));
    assert_eq!(
        post_json(server.local_addr(), "/", "null").await.json(),
        "hello"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn cron_lag_is_measured() {
    let server = Runner::new()
        .workflow(every_second)
        .start(config(None))
        .await
        .unwrap();
    let addr = server.local_addr();
    let mut text = String::new();
    for _ in 0..40 {
        text = String::from_utf8(get(addr, "/metrics").await.body).unwrap();
        if text.contains(
            r#"nanoflow_runs_finished_total{workflow="every_second",status="succeeded"} 1"#,
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metric(
            &text,
            r#"nanoflow_cron_lag_seconds_count{workflow="every_second"}"#
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            r#"nanoflow_cron_lag_seconds_bucket{workflow="every_second",le="1"}"#
        ) >= 1.0,
        "fired within a second of its time"
    );
    assert_eq!(
        metric(
            &text,
            r#"nanoflow_cron_ticks_skipped_total{workflow="every_second"}"#
        ),
        0.0
    );
    server.shutdown().await.unwrap();
}
