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

/// Runs the `orders` binary with `args`; returns (exit code, stdout, stderr).
fn orders(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(support::example_binary("orders"))
        .args(args)
        .env("NANOFLOW_LOG", "error")
        .env_remove("NANOFLOW_JOURNAL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every `runs` command the README documents, as a process: exit codes and output. (They all
/// exited 101 once: the `runs` journal flag clashed with `serve`'s.)
#[tokio::test]
async fn runs_commands_list_show_and_retry_from_the_journal() {
    let dir = std::env::temp_dir().join(format!("nanoflow-cli-{}", support::random(1 << 40)));
    std::fs::create_dir_all(&dir).unwrap();
    let journal = dir.join("journal.db");
    let journal_arg = journal.to_str().unwrap();
    let addr = support::free_addr();
    let mut child = Command::new(support::example_binary("orders"))
        .args([
            "serve",
            "--addr",
            &addr.to_string(),
            "--journal",
            journal_arg,
        ])
        .env("NANOFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    support::wait_ready(addr, &mut child).await;
    // Ten melons take the whole stock; the next order fails at `reserve` (409).
    let ok = r#"{"id":"m-1","customer":"ada","items":[{"sku":"melon","qty":10}]}"#;
    let r = support::post_json(addr, "/orders", ok).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let bad = r#"{"id":"m-2","customer":"bob","items":[{"sku":"melon","qty":1}]}"#;
    let r = support::post_json(addr, "/orders", bad).await;
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    let failed_id = r.json()["error"]["run_id"].as_str().unwrap().to_owned();
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());

    let (code, out, err) = orders(&["runs", "list", "--journal", journal_arg]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains(&failed_id) && out.contains("failed") && out.contains("succeeded"),
        "{out}"
    );

    let (code, out, err) = orders(&[
        "runs",
        "list",
        "--status",
        "failed",
        "--journal",
        journal_arg,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("reserve: not enough `melon` in stock"),
        "{out}"
    );

    let (code, _, err) = orders(&["runs", "list", "--status", "lost", "--journal", journal_arg]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown status `lost`"), "{err}");

    let (code, out, err) = orders(&["runs", "show", &failed_id, "--journal", journal_arg]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["run_id"], failed_id.as_str());
    assert_eq!(shown["status"], "failed");

    let (code, _, err) = orders(&["runs", "show", "nope", "--journal", journal_arg]);
    assert_eq!(code, 1);
    assert!(err.contains("nope"), "{err}");

    // A fresh process has the whole stock again: the re-drive succeeds and prints the output.
    let (code, out, err) = orders(&["runs", "retry", &failed_id, "--journal", journal_arg]);
    assert_eq!(code, 0, "{err}");
    let output: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(output["order_id"], "m-2");
    let (code, out, _) = orders(&["runs", "show", &failed_id, "--journal", journal_arg]);
    assert_eq!(code, 0);
    assert!(out.contains("\"succeeded\""), "{out}");

    // Only failed runs can be re-driven.
    let (code, _, err) = orders(&["runs", "retry", &failed_id, "--journal", journal_arg]);
    assert_eq!(code, 1);
    assert!(err.contains("not a failed run"), "{err}");

    // The environment names the journal as well as the flag does.
    let out = Command::new(support::example_binary("orders"))
        .args(["runs", "list"])
        .env("NANOFLOW_JOURNAL", journal_arg)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    let missing = dir.join("missing.db");
    let (code, _, err) = orders(&["runs", "list", "--journal", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("no journal at"), "{err}");

    let (code, out, _) = orders(&["--help"]);
    assert_eq!(code, 0);
    for command in ["serve", "run", "list", "runs", "graph"] {
        assert!(out.contains(command), "{out}");
    }
    let (code, out, _) = orders(&["graph", "place_order"]);
    assert_eq!(code, 0);
    assert!(out.contains("flowchart") || out.contains("graph"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
