//! Regression tests for the defects found by attacking a running service (the hardening issue),
//! against the example programs as real processes: slow and idle connections, a shutdown with
//! a half-sent request, a journal on a full disk, input nested too deep, the admin token.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A runner process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nanoflow-{name}-{}", support::random(1 << 40)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts example `name` serving on a free port with `args`, through `sh` so that `shell`
/// (e.g. `ulimit -Sn 1024`) applies to it first.
async fn start(
    name: &str,
    shell: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Proc, SocketAddr) {
    let addr = support::free_addr();
    let bin = support::example_binary(name);
    let mut script = format!("{shell}\nexec \"$0\" serve --addr {addr}");
    for a in args {
        script.push_str(&format!(" '{a}'"));
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg(&bin);
    cmd.env("NANOFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    support::wait_ready(addr, &mut child).await;
    (Proc(child), addr)
}

const ORDER: &str = r#"{"id":"o-1","customer":"ada","items":[{"sku":"apple","qty":1}]}"#;

/// Opens a connection and sends the headers of a POST announcing `length` bytes, and `sent`
/// of them; the connection is kept open by the returned stream.
async fn half_sent(addr: SocketAddr, length: usize, sent: usize) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.ok()?;
    s.write_all(&ORDER.as_bytes()[..sent]).await.ok()?;
    Some(s)
}

/// Reads until the peer closes or `limit` passes; returns what arrived and whether it closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, s.read_to_end(&mut out))
        .await
        .is_ok();
    (out, closed)
}

/// 1,100 requests that send half a body, held open, under a soft open files limit of 1,024:
/// the runner raises the limit, takes no run slot for a body not yet read, and a complete
/// request still gets its answer at once. (Before: every trigger answered `503 overloaded`,
/// then `accept` failed with "Too many open files".)
#[tokio::test]
async fn half_sent_requests_do_not_take_the_service_down() {
    let (_runner, addr) = start("orders", "ulimit -Sn 1024", &["--journal", "off"], &[]).await;
    let mut held = Vec::new();
    for _ in 0..1100 {
        let s = half_sent(addr, ORDER.len(), 10)
            .await
            .expect("the runner stopped accepting connections");
        held.push(s);
    }
    let started = Instant::now();
    let r = support::post_json(addr, "/orders", ORDER).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "a complete request waited {took:?}"
    );
    // The held requests are still alive (not refused): finishing one gets its answer.
    let mut s = held.pop().unwrap();
    s.write_all(&ORDER.as_bytes()[10..]).await.unwrap();
    let (reply, _) = read_until_closed(&mut s, Duration::from_secs(2)).await;
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

/// Headers that never end, a body that never ends, and an idle keep-alive connection are each
/// closed after their timeout.
#[tokio::test]
async fn slow_headers_slow_bodies_and_idle_connections_time_out() {
    let (_runner, addr) = start(
        "orders",
        "",
        &[
            "--journal",
            "off",
            "--header-timeout",
            "1s",
            "--body-timeout",
            "1s",
            "--idle-timeout",
            "1s",
        ],
        &[],
    )
    .await;
    // Half a header.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /orders HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(
        closed,
        "a connection that never finished its headers stayed open"
    );

    // Half a body: 408 with a JSON error.
    let mut s = half_sent(addr, ORDER.len(), 5).await.unwrap();
    let (reply, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"body_timeout\""), "{reply}");
    assert!(closed);

    // A keep-alive connection after its answer, then silence.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (reply, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"));
    assert!(closed, "an idle keep-alive connection stayed open");
}

/// The header timeout holds on its own, with a long idle timeout: headers trickled a byte at a
/// time (activity that an idle check would take for a live client) and a connection that
/// never sends a byte are both closed after it; a keep-alive connection quiet between two
/// requests for longer than the header timeout is not.
#[tokio::test]
async fn headers_trickled_byte_by_byte_time_out_but_keep_alive_pauses_do_not() {
    let (_runner, addr) = start(
        "orders",
        "",
        &[
            "--journal",
            "off",
            "--header-timeout",
            "1s",
            "--idle-timeout",
            "60s",
        ],
        &[],
    )
    .await;
    // A byte every 100 ms, never reaching the end of the headers.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut closed_after = None;
    for byte in b"POST /orders HTTP/1.1\r\nhost: x\r\nx-pad: "
        .iter()
        .cycle()
        .take(200)
    {
        if slow.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut one = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(100), slow.read(&mut one)).await
        {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after =
        closed_after.expect("a client trickling its headers for 20 s stayed connected");
    assert!(
        closed_after < Duration::from_secs(4),
        "trickled headers were cut after {closed_after:?} (header timeout 1 s)"
    );

    // Connected, and silent.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(4)).await;
    assert!(
        closed,
        "a connection that sent nothing stayed open past the header timeout"
    );

    // Two requests on one connection, 1.5 s apart: the pause is the idle timeout's business.
    let mut s = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut reply = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut reply))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            String::from_utf8_lossy(&reply[..n]).starts_with("HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&reply[..n])
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

/// SIGTERM while a request has sent half its body: the read is abandoned (503), and the runner
/// exits long before its 30 s grace period.
#[tokio::test]
async fn shutdown_does_not_wait_for_half_sent_bodies() {
    let (mut runner, addr) =
        start("orders", "", &["--journal", "off", "--grace", "30s"], &[]).await;
    let mut s = half_sent(addr, ORDER.len(), 5).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &runner.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let (reply, _) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("shutting_down"), "{reply}");
    let status = loop {
        if let Some(status) = runner.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the runner waited for the half-sent body"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}

/// A body whose unknown field nests 130 arrays deep is refused with a 400 that says why, and
/// the run list stays servable. (Before: accepted, then `GET /runs` died for 7 days.)
#[tokio::test]
async fn input_nested_too_deep_is_refused_and_run_lists_stay_servable() {
    let dir = temp_dir("deep");
    let journal = dir.join("journal.db");
    let (runner, addr) = start("orders", "", &["--journal", journal.to_str().unwrap()], &[]).await;
    let deep = format!(
        r#"{{"id":"d-1","customer":"ada","items":[{{"sku":"apple","qty":1}}],"x":{}1{}}}"#,
        "[".repeat(130),
        "]".repeat(130)
    );
    let r = support::post_json(addr, "/orders", &deep).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "too_deep");
    assert_eq!(r.json()["error"]["limit"], 128);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("128"));
    assert_eq!(support::post_json(addr, "/orders", ORDER).await.status, 200);
    let list = support::get(addr, "/runs").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["runs"].as_array().unwrap().len(), 1);
    drop(runner);

    // A journal written before the fix holds such an input: it is served as it was stored
    // (raw JSON, which this test's own parser, limited to 128 levels like the runner's, reads
    // as text).
    let conn = rusqlite::Connection::open(&journal).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    conn.execute(
        "INSERT INTO runs (id, workflow, status, input, created_ms, finished_ms) VALUES
         ('0000000000000000000000000000dee9', 'place_order', 'failed', ?1, ?2, ?2)",
        rusqlite::params![deep.as_bytes(), now],
    )
    .unwrap();
    drop(conn);
    let (_runner, addr) = start("orders", "", &["--journal", journal.to_str().unwrap()], &[]).await;
    let list = support::get(addr, "/runs").await;
    assert_eq!(list.status, 200, "{}", String::from_utf8_lossy(&list.body));
    let text = String::from_utf8_lossy(&list.body);
    assert!(text.contains(&format!("\"input\":{deep}")), "{text}");
    assert_eq!(text.matches("\"run_id\"").count(), 2, "{text}");
    let one = support::get(addr, "/runs/0000000000000000000000000000dee9").await;
    assert_eq!(one.status, 200);
    assert!(String::from_utf8_lossy(&one.body).contains(&deep));
    let _ = std::fs::remove_dir_all(&dir);
}

const TOKEN: &str = "hardening-token-0123456789";

/// A token shorter than 16 bytes is refused at start with the reason; wrong bearer tokens are
/// throttled per client (429 with Retry-After, even for the right token while blocked); the
/// login cookie is a random session id, not the token, and logout revokes it.
#[tokio::test]
async fn the_admin_token_is_long_throttled_and_sessions_are_revocable() {
    let out = Command::new(support::example_binary("orders"))
        .args(["serve", "--journal", "off", "--admin-token", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("at least 16") && err.contains("guessed"),
        "{err}"
    );

    let (_runner, addr) = start(
        "orders",
        "",
        &["--journal", "off"],
        &[("NANOFLOW_ADMIN_TOKEN", TOKEN)],
    )
    .await;
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        support::get_with(addr, "/runs", &[("authorization", &bearer)])
            .await
            .status,
        200 // the journal is off (runs kept in memory): the route answers, past the token
    );
    let mut statuses = Vec::new();
    for i in 0..14 {
        let wrong = format!("Bearer wrong-{i}");
        statuses.push(
            support::get_with(addr, "/workflows", &[("authorization", &wrong)])
                .await
                .status,
        );
    }
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    let blocked = support::get_with(addr, "/workflows", &[("authorization", &bearer)]).await;
    assert_eq!(blocked.status, 429);
    assert_eq!(blocked.json()["error"]["code"], "too_many_attempts");
    let wait: u64 = blocked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let r = support::get_with(addr, "/workflows", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 200);

    let login = support::request(
        addr,
        "POST",
        "/login",
        &[("content-type", "application/json")],
        format!(r#"{{"token":"{TOKEN}"}}"#).as_bytes(),
    )
    .await;
    assert_eq!(login.status, 204);
    let cookie = login.header("set-cookie").unwrap().to_owned();
    let pair = cookie.split(';').next().unwrap().to_owned();
    let session = pair.trim_start_matches("nanoflow_admin=");
    assert!(!session.contains(TOKEN) && session.len() == 64, "{pair}");
    assert_eq!(
        support::get_with(addr, "/workflows", &[("cookie", &pair)])
            .await
            .status,
        200
    );
    // The token itself is not a cookie.
    let forged = format!("nanoflow_admin={TOKEN}");
    assert_eq!(
        support::get_with(addr, "/workflows", &[("cookie", &forged)])
            .await
            .status,
        401
    );
    let out = support::request(addr, "POST", "/logout", &[("cookie", &pair)], b"").await;
    assert_eq!(out.status, 303);
    assert_eq!(
        support::get_with(addr, "/workflows", &[("cookie", &pair)])
            .await
            .status,
        401
    );
}

/// Mounts a tmpfs of `size` at `dir`; `false` when this process may not (not root).
fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

fn ledger_ids(path: &Path) -> std::collections::HashMap<String, Vec<String>> {
    let mut steps: std::collections::HashMap<String, Vec<String>> = Default::default();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let mut parts = line.split(' ');
        let (_, id, step) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        steps
            .entry(id.to_owned())
            .or_default()
            .push(step.to_owned());
    }
    steps
}

/// The journal on a real 2 MiB tmpfs that fills up under load. Every answer must be true:
/// - `503` without a run id: no step of that request ran, and nothing resumes it;
/// - `503` with `recorded: false`: the run is not in the journal and never resumes;
/// - `202` (the journal failed during a recorded run): the run completes once space is freed,
///   without a restart, running no recorded step again;
/// - `200`: every step ran exactly once.
///
/// And the checkpoint failure is logged once, then at a falling rate (not every 250 ms).
#[tokio::test]
async fn a_full_disk_never_gets_an_untrue_answer() {
    let dir = temp_dir("fulldisk");
    let disk = dir.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    if !mount_tmpfs(&disk, "2m") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: mounting a tmpfs must work"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs (not root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(disk.clone());
    let journal = disk.join("journal.db");
    let ledger = dir.join("ledger.log");
    let log = dir.join("runner.log");
    let addr = support::free_addr();
    let mut child = Command::new(support::example_binary("durable"))
        .args([
            "serve",
            "--addr",
            &addr.to_string(),
            "--journal",
            journal.to_str().unwrap(),
        ])
        .env("NANOFLOW_LOG", "warn")
        .env("NANOFLOW_LEDGER", &ledger)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    support::wait_ready(addr, &mut child).await;
    let runner = Proc(child);

    // Inputs of ~2 KB fill the 2 MiB disk within a few hundred runs; 8 at a time.
    let pad = "x".repeat(2000);
    let mut answers: Vec<(String, u16, serde_json::Value)> = Vec::new();
    let mut full_since: Option<usize> = None;
    let mut n = 0;
    while n < 3000 && full_since.is_none_or(|f| n < f + 80) {
        let mut batch = Vec::new();
        for _ in 0..8 {
            let id = format!("s-{n}");
            n += 1;
            let body = format!(r#"{{"id":"{id}","pad":"{pad}"}}"#);
            batch.push(tokio::spawn(async move {
                let r = support::post_json(addr, "/shipments", &body).await;
                let json = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
                (id, r.status, json)
            }));
        }
        for b in batch {
            let (id, status, json) = b.await.unwrap();
            if status != 200 && full_since.is_none() {
                full_since = Some(n);
            }
            answers.push((id, status, json));
        }
    }
    assert!(full_since.is_some(), "the disk never filled up");
    // Free space: the disk grows, as after an operator's cleanup.
    assert!(Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&disk)
        .status()
        .unwrap()
        .success());
    // The journal notices (it probes every 500 ms) and says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = support::get(addr, "/readyz").await;
        if ready.status == 200 {
            break;
        }
        assert_eq!(ready.json()["checks"]["journal"]["ready"], false);
        assert!(Instant::now() < deadline, "the journal never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stalled recorded runs resume without a restart, and finish (the journal says so).
    let deadline = Instant::now() + Duration::from_secs(30);
    let accepted: Vec<String> = answers
        .iter()
        .filter(|a| a.1 == 202)
        .map(|a| {
            a.2["run_id"]
                .as_str()
                .expect("a 202 names its run")
                .to_owned()
        })
        .collect();
    for run_id in &accepted {
        loop {
            let r = support::get(addr, &format!("/runs/{run_id}")).await;
            if r.status == 200 && r.json()["status"] == "succeeded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} did not finish after the journal recovered: {}",
                String::from_utf8_lossy(&r.body)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // New runs are accepted again.
    let r = support::post_json(addr, "/shipments", r#"{"id":"after"}"#).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    drop(runner);

    let steps = ledger_ids(&ledger);
    let conn = rusqlite::Connection::open(&journal).unwrap();
    let status_of = |id: &str| -> Option<String> {
        conn.query_row(
            "SELECT status FROM runs WHERE json_extract(input, '$.id') = ?1",
            [id],
            |r| r.get(0),
        )
        .ok()
    };
    let (mut refused, mut abandoned, mut stalled) = (0, 0, 0);
    for (id, status, json) in &answers {
        let ran = steps.get(id).cloned().unwrap_or_default();
        match status {
            200 => assert_eq!(ran, ["reserve_stock", "charge_card", "ship"], "{id}"),
            202 => {
                stalled += 1;
                // Recorded steps never run again; the one whose record the full disk refused
                // runs again on resume (at least once, as after a crash).
                let mut distinct = ran.clone();
                distinct.dedup();
                assert_eq!(
                    distinct,
                    ["reserve_stock", "charge_card", "ship"],
                    "{id}: {json}"
                );
                assert!(ran.len() <= 4, "{id} ran {ran:?}");
                assert_eq!(status_of(id).as_deref(), Some("succeeded"), "{id}");
            }
            503 if json["error"]["run_id"].is_null() => {
                refused += 1;
                assert_eq!(json["error"]["code"], "journal_unavailable", "{id}: {json}");
                assert!(
                    ran.is_empty(),
                    "{id} was answered `not started`, but ran {ran:?}"
                );
                assert_eq!(status_of(id), None, "{id}");
            }
            503 => {
                abandoned += 1;
                assert_eq!(json["error"]["recorded"], false, "{id}: {json}");
                assert_eq!(
                    status_of(id),
                    None,
                    "{id} resumes, but its client was told it never will"
                );
            }
            other => panic!("{id}: unexpected {other}: {json}"),
        }
    }
    eprintln!(
        "answers: {} in all, {refused} refused, {abandoned} abandoned, {stalled} resumed",
        answers.len()
    );
    assert!(refused > 0, "no request met the full journal");
    let text = std::fs::read_to_string(&log).unwrap();
    let checkpoint_lines = text.matches("journal checkpoint failed").count();
    assert!(
        checkpoint_lines <= 8,
        "{checkpoint_lines} checkpoint warnings:\n{text}"
    );
    drop(conn);
    drop(_unmount);
    let _ = std::fs::remove_dir_all(&dir);
}
