//! The dashboard's flow control in headless Chromium (issue 15): a waiting run shows its
//! signal's form, built from the signal type's schema, and the signal sent from it resumes the
//! run live; a waiting run is cancelled from its page; queued and waiting runs are filtered.
//!
//! Without Chromium the test fails when `CI` is set, and is skipped, loudly, otherwise.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

#[path = "browser/mod.rs"]
mod browser;

use std::net::SocketAddr;
use std::path::PathBuf;

use nanoflow::prelude::*;
use nanoflow::{AdminToken, ServeConfig};
use serde::{Deserialize, Serialize};
use support::request;

#[derive(Debug, Clone, Serialize, Deserialize, nanoflow::JsonSchema)]
pub struct Ask {
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, nanoflow::JsonSchema)]
pub struct Approval {
    pub approved: bool,
    pub by: String,
}

#[node]
fn ask(a: Ask) -> Ask {
    a
}

#[node]
fn answer(parts: (Ask, Approval)) -> String {
    let (a, approval) = parts;
    format!(
        "{} {} by {}",
        a.id,
        if approval.approved {
            "approved"
        } else {
            "rejected"
        },
        approval.by
    )
}

workflow! {
    /// Waits for an approval.
    #[trigger(http = "POST /ask")]
    pub asking: ask -> signal(approval: Approval) -> answer;
}

const TOKEN: &str = "browser-flow-token-91ac";

fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("screenshots").join("flow")
}

async fn waiting_run(addr: SocketAddr, id: &str) -> String {
    let r = request(
        addr,
        "POST",
        "/ask",
        &[("content-type", "application/json")],
        format!(r#"{{"id":"{id}"}}"#).as_bytes(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["status"], "waiting");
    r.json()["run_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_and_cancellation_from_the_dashboard() {
    let Some((chromium, driver)) = browser::find_browser() else {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but `chromium` and `chromedriver` are not installed: the dashboard's browser test cannot run");
        }
        eprintln!("\n!!! SKIPPED signals_and_cancellation_from_the_dashboard: `chromium` / `chromedriver` not found. In CI this test fails instead.\n");
        return;
    };
    let journal = std::env::temp_dir()
        .join(format!(
            "nanoflow-dashboard-flow-{}",
            nanoflow::RunId::new()
        ))
        .join("journal.db");
    let server = Runner::new()
        .workflow(asking)
        .start(ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            journal: Some(journal),
            admin_token: Some(AdminToken::new(TOKEN).unwrap()),
            ..ServeConfig::default()
        })
        .await
        .expect("server starts");
    let addr = server.local_addr();
    let base = format!("http://{addr}");
    let b = browser::Browser::start(&chromium, &driver, screenshots()).await;
    b.goto(&format!("{base}/")).await;
    b.wait("form.login #token").await;
    b.type_into("#token", TOKEN).await;
    b.click("#login").await;
    b.wait("#live.on").await;

    // A waiting run: its page has a form for its signal, from `Approval`'s schema.
    let first = waiting_run(addr, "r-1").await;
    b.goto(&format!("{base}/#/runs/{first}")).await;
    b.wait("#run-status .badge.waiting").await;
    b.wait(r#"form[data-signal="approval"] [data-path="by"]"#)
        .await;
    b.type_into(r#"form[data-signal="approval"] [data-path="by"]"#, "ana")
        .await;
    b.click(r#"form[data-signal="approval"] [data-path="approved"]"#)
        .await;
    b.screenshot("01-signal-form").await;
    b.click(r#"form[data-signal="approval"] button[type="submit"]"#)
        .await;
    b.wait("#run-status .badge.succeeded").await;
    b.screenshot("02-signalled").await;
    let run = support::get_with(
        addr,
        &format!("/runs/{first}"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
    .await
    .json();
    assert_eq!(run["output"], "r-1 approved by ana", "{run}");

    // Another waiting run, listed under `waiting`, cancelled from its page.
    let second = waiting_run(addr, "r-2").await;
    b.goto(&format!("{base}/#/runs?status=waiting")).await;
    b.wait(&format!(r#"tr[data-run="{second}"] .badge.waiting"#))
        .await;
    assert!(b
        .find(&format!(r#"tr[data-run="{first}"]"#))
        .await
        .is_none());
    b.click(&format!(r#"tr[data-run="{second}"] a"#)).await;
    b.wait("#run-status .badge.waiting").await;
    b.click("#cancel-run").await;
    b.wait("#run-status .badge.cancelled").await;
    b.screenshot("03-cancelled").await;
    let console = b.console().await;
    assert!(
        console.iter().all(|e| e["level"] != "SEVERE"),
        "browser errors: {console:?}"
    );
    server.shutdown().await.unwrap();
}
