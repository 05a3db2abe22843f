//! A small WebDriver client (W3C protocol, plain HTTP/1.1 to chromedriver on 127.0.0.1) driving
//! Debian's headless Chromium, for the dashboard's end-to-end test.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One WebDriver command: JSON over HTTP/1.1, the answer read by its `content-length`
/// (chromedriver keeps connections open).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    _headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .expect("connect to chromedriver timed out")
    .expect("connect to chromedriver");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let read = async {
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = stream.read(&mut buf).await.expect("read from chromedriver");
            raw.extend_from_slice(&buf[..n]);
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if raw.len() >= end + 4 + len || n == 0 {
                    let status = head
                        .split(' ')
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    return Reply {
                        status,
                        body: raw[end + 4..].to_vec(),
                    };
                }
            }
            assert!(n > 0, "chromedriver closed the connection early");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("chromedriver did not answer within 60 s")
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian puts the browser and its driver.
pub(crate) fn find_browser() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .or_else(|| {
                let path = std::env::var_os("PATH")?;
                std::env::split_paths(&path)
                    .find_map(|dir| names.iter().map(|n| dir.join(n)).find(|p| p.exists()))
            })
    };
    let chromium = find(&["/usr/bin/chromium", "chromium", "chromium-browser"])?;
    let driver = find(&["/usr/bin/chromedriver", "chromedriver"])?;
    Some((chromium, driver))
}

pub(crate) struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
    pub(crate) shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session ends Chromium; then the driver.
        let addr = self.addr;
        let path = format!("/session/{}", self.session);
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(request(addr, "DELETE", &path, &[], b"")))
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    pub(crate) async fn start(chromium: &Path, driver: &Path, shots: PathBuf) -> Browser {
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let status = request(addr, "GET", "/status", &[], b"").await;
                if status.status == 200 && status.json()["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile =
            std::env::temp_dir().join(format!("nanoflow-chromium-{}", nanoflow::RunId::new()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1440,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut browser = Browser {
            driver: child,
            addr,
            session: String::new(),
            profile,
            shots,
        };
        let created = browser.call("POST", "/session", Some(caps)).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        std::fs::create_dir_all(&browser.shots).expect("create the screenshot directory");
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let r = request(
            self.addr,
            method,
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await;
        let v = r.json();
        assert!(
            r.status == 200,
            "WebDriver {method} {path}: {} {v}",
            r.status
        );
        v["value"].clone()
    }

    async fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })))
            .await;
    }

    pub(crate) async fn url(&self) -> String {
        self.session_call("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns its value.
    pub(crate) async fn exec(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The first element matching `css`, if any.
    pub(crate) async fn find(&self, css: &str) -> Option<String> {
        let r = request(
            self.addr,
            "POST",
            &format!("/session/{}/element", self.session),
            &[("content-type", "application/json")],
            json!({"using": "css selector", "value": css})
                .to_string()
                .as_bytes(),
        )
        .await;
        let v = r.json();
        (r.status == 200).then(|| {
            v["value"][ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("no element reference in {v}"))
                .to_owned()
        })
    }

    /// Waits up to 20 s for an element matching `css`.
    pub(crate) async fn wait(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            if Instant::now() > deadline {
                let _ = self.screenshot("timeout").await;
                let log = self.console().await;
                panic!(
                    "no element `{css}` after 20 s at {}; console: {log:?}",
                    self.url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn click(&self, css: &str) {
        let e = self.wait(css).await;
        self.session_call("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await;
    }

    pub(crate) async fn text(&self, css: &str) -> String {
        let e = self.wait(css).await;
        self.session_call("GET", &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub(crate) async fn clear(&self, css: &str) {
        let e = self.wait(css).await;
        self.session_call("POST", &format!("/element/{e}/clear"), Some(json!({})))
            .await;
    }

    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let e = self.wait(css).await;
        self.session_call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Saves a PNG of the viewport as `<shots>/<name>.png`.
    pub(crate) async fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.session_call("GET", "/screenshot", None).await;
        let png = base64_decode(b64.as_str().unwrap_or_default());
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// The browser console's messages so far (severe ones are page errors).
    pub(crate) async fn console(&self) -> Vec<Value> {
        let r = request(
            self.addr,
            "POST",
            &format!("/session/{}/se/log", self.session),
            &[("content-type", "application/json")],
            br#"{"type":"browser"}"#,
        )
        .await;
        if r.status != 200 {
            return Vec::new();
        }
        r.json()["value"].as_array().cloned().unwrap_or_default()
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
