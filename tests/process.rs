//! The `orders` example as a real process: `cargo run --example orders` serves HTTP, and
//! SIGTERM stops it gracefully (in-flight runs finish, exit code 0).
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test]
async fn serves_and_stops_gracefully_on_sigterm() {
    let addr = support::free_addr();
    let mut child = Command::new(support::example_binary("orders"))
        .args([
            "serve",
            "--addr",
            &addr.to_string(),
            "--grace",
            "10s",
            "--journal",
            "off",
        ])
        .env("NANOFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    support::wait_ready(addr, &mut child).await;

    let order =
        r#"{"id":"o-9","customer":"ada","items":[{"sku":"apple","qty":2},{"sku":"pear","qty":1}]}"#;
    let r = support::post_json(addr, "/orders", order).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["total_cents"], 468); // (2*120 + 150) * 1.2
    assert_eq!(r.json()["reservation_id"], "r-o-9");

    let r = support::post_json(
        addr,
        "/orders",
        r#"{"id":"o-10","customer":"ada","items":[{"sku":"kiwi","qty":1}]}"#,
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["node"], "validate");

    signal(&child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "orders did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn cli_reports_bad_usage_clearly() {
    let out = Command::new(support::example_binary("orders"))
        .args(["run", "nope", "--input", "{}"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown workflow `nope`"), "{err}");

    let out = Command::new(support::example_binary("orders"))
        .args(["run", "place_order", "--input", "{\"id\":"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed JSON at line 1"));

    let out = Command::new(support::example_binary("orders"))
        .args([
            "run",
            "place_order",
            "--input",
            r#"{"id":"o","customer":"c","items":[{"sku":"melon","qty":1}]}"#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total_cents"], 480);

    let out = Command::new(support::example_binary("orders"))
        .args(["graph", "place_order", "--format", "dot"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("digraph \"place_order\""));

    let out = Command::new(support::example_binary("orders"))
        .arg("list")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("trigger: http POST /orders"), "{text}");
    assert!(
        text.contains("trigger: cron \"0 * * * * *\" UTC") && text.contains("next: "),
        "{text}"
    );
}
