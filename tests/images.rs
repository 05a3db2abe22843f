//! `cargo build` makes a service's images (issue 14), against the real Docker Engine: the
//! fixture `tests/fixtures/images-shop` calls `nanoflow_build::images()` in its build script and
//! is built here with `cargo build`. Its runner image serves the workflow, every node has an
//! image holding the node entrypoint only, `serve --isolation container` uses those images and
//! answers as in-process, and a build without an engine succeeds with one warning.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nanoflow::isolation::manifest::Manifest;
use support::{free_addr, post_json, wait_ready};

const NODES: [&str; 4] = ["price", "shipping", "tax", "total"];

const ORDERS: [&str; 3] = [
    r#"{"id":"o-1","qty":3,"unit_cents":1000}"#,
    r#"{"id":"o-2","qty":20,"unit_cents":1000}"#,
    r#"{"id":"o-3","qty":0,"unit_cents":1000}"#,
];

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
        eprintln!("\n*** SKIPPED: no Docker Engine answers; image tests did not run ***\n");
    }
    ok
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images-shop")
}

/// The fixture's own target directory, beside this workspace's (kept between runs).
fn target_dir() -> PathBuf {
    // target/debug/deps/images-HASH -> target/fixtures
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("fixtures")
}

fn binary() -> PathBuf {
    target_dir().join("debug/images-shop")
}

/// `cargo build` of the fixture, after touching its source so that its build script runs.
fn cargo_build(env: &[(&str, &str)]) -> Output {
    let main = fixture().join("src/main.rs");
    std::fs::File::options()
        .append(true)
        .open(&main)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.arg("build")
        .current_dir(fixture())
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("NANOFLOW_IMAGES")
        .env_remove("DOCKER_HOST")
        .env_remove("RUSTFLAGS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "`cargo build` of the fixture failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The lines of cargo's output that come from nanoflow-build.
fn nanoflow_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("nanoflow:"))
        .map(str::to_owned)
        .collect()
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Status and body of each order posted to `/checkout` on `addr`.
async fn answers(addr: std::net::SocketAddr) -> Vec<(u16, serde_json::Value)> {
    let mut out = Vec::new();
    for order in ORDERS {
        let r = post_json(addr, "/checkout", order).await;
        let mut body = r.json();
        // Run ids differ from run to run; everything else must not.
        if let Some(error) = body.get_mut("error") {
            error.as_object_mut().unwrap().remove("run_id");
        }
        out.push((r.status, body));
    }
    out
}

/// Serves the fixture's binary with `args` until the returned guard is dropped.
struct Served(std::process::Child);

impl Drop for Served {
    /// A graceful stop (SIGTERM), so that a runner in container mode removes its containers.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn serve(args: &[&str], addr: std::net::SocketAddr, journal: &Path) -> Served {
    let mut child = Command::new(binary())
        .arg("serve")
        .args(args)
        .env("NANOFLOW_ADDR", addr.to_string())
        .env("NANOFLOW_JOURNAL", journal)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(addr, &mut child).await;
    Served(child)
}

#[tokio::test(flavor = "multi_thread")]
async fn cargo_build_makes_runner_and_node_images() {
    if !docker_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("nanoflow-images-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // No engine: the build succeeds with one warning that names the reason, and no list of
    // images is left for `serve` to trust.
    let out = cargo_build(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    let lines = nanoflow_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("no images built: no Docker Engine socket at unix:///nonexistent"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("NANOFLOW_IMAGES=0"), "{}", lines[0]);
    let listed = nanoflow::isolation::manifest::path_for(&binary());
    assert!(!listed.exists(), "{} is left behind", listed.display());

    // NANOFLOW_IMAGES=0: silence.
    let out = cargo_build(&[("NANOFLOW_IMAGES", "0")]);
    assert_eq!(nanoflow_lines(&out), Vec::<String>::new());
    assert!(!listed.exists());

    // With the engine: the runner image and one image per node.
    let out = cargo_build(&[]);
    let lines = nanoflow_lines(&out);
    assert!(
        lines.iter().all(|l| l.contains("nanoflow: built the")),
        "{lines:#?}"
    );
    let made = Manifest::for_binary(&binary()).expect("the build lists its images");
    assert_eq!(made.service, "images-shop");
    assert!(made.runner.starts_with("nanoflow/images-shop:"), "{made:?}");
    assert_eq!(made.nodes.keys().collect::<Vec<_>>(), NODES);
    for (node, tag) in &made.nodes {
        assert!(tag.starts_with(&format!("nanoflow/images-shop-{node}:")));
        let labels = docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Labels}}",
            tag,
        ]);
        let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
        assert_eq!(labels["nanoflow.node"], node.as_str());
        assert_eq!(labels["nanoflow.role"], "node");
    }

    // Built again from the same sources: the same images, none built again, nothing printed.
    let again = cargo_build(&[]);
    assert_eq!(nanoflow_lines(&again), Vec::<String>::new());
    assert_eq!(Manifest::for_binary(&binary()).as_ref(), Some(&made));

    // A node image holds the node entrypoint: none of the runner's servers, journal or Docker
    // client is linked into its binary, while the runner's binary has them all.
    let node_bin =
        std::fs::read(target_dir().join("nanoflow-images/node/debug/images-shop")).unwrap();
    let runner_bin =
        std::fs::read(target_dir().join("nanoflow-images/runner/debug/images-shop")).unwrap();
    let has = |bin: &[u8], what: &str| bin.windows(what.len()).any(|w| w == what.as_bytes());
    for part in ["axum", "hyper", "rusqlite", "bollard"] {
        assert!(has(&runner_bin, part), "the runner's binary lacks `{part}`");
        assert!(!has(&node_bin, part), "the node entrypoint links `{part}`");
    }
    let node_size: u64 = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        &made.nodes["price"],
    ])
    .parse()
    .unwrap();
    let runner_size: u64 = docker(&["image", "inspect", "--format", "{{.Size}}", &made.runner])
        .parse()
        .unwrap();
    assert!(
        node_size * 2 < runner_size,
        "node image {node_size} B, runner image {runner_size} B"
    );

    // In-process answers, the reference.
    let addr = free_addr();
    let served = serve(&[], addr, &dir.join("process.db")).await;
    let expected = answers(addr).await;
    drop(served);
    assert_eq!(expected[0].1, serde_json::json!(800));
    assert_eq!(expected[2].0, 422);

    // The runner image serves its workflow, its journal on the volume `/data`.
    let volumes = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Volumes}}",
        &made.runner,
    ]);
    assert_eq!(volumes, r#"{"/data":{}}"#);
    let addr = free_addr();
    let name = format!("nanoflow-images-test-{}", std::process::id());
    let mut child = Command::new("docker")
        .args(["run", "--rm", "--name", &name, "--network", "host", "-e"])
        .arg(format!("NANOFLOW_ADDR={addr}"))
        .arg(&made.runner)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(addr, &mut child).await;
    let from_image = answers(addr).await;
    docker(&["rm", "-f", &name]);
    let _ = child.wait();
    assert_eq!(from_image, expected);

    // Container mode uses the images `cargo build` made (one warm container each) and gives
    // the same answers.
    let addr = free_addr();
    let served = serve(
        &["--isolation", "container"],
        addr,
        &dir.join("container.db"),
    )
    .await;
    for (node, tag) in &made.nodes {
        let running = docker(&["ps", "-q", "--filter", &format!("ancestor={tag}")]);
        assert!(!running.is_empty(), "no container of {node} runs {tag}");
    }
    let in_containers = answers(addr).await;
    drop(served);
    assert_eq!(in_containers, expected);
    let _ = std::fs::remove_dir_all(&dir);
}
