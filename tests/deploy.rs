//! Placement on existing engines (issue 12): `deploy/compose.yaml` deployed for real as a Docker
//! Swarm stack on a single-node swarm (PostgreSQL and three runner replicas, traffic only to
//! their published ports on 127.0.0.1; one replica killed), and `deploy/kubernetes/` checked
//! statically (no cluster here): parsed, and the fields the runners rely on checked.
//!
//! This machine's kernel has no IPVS, which Swarm's routing mesh and virtual IPs need: the
//! stack publishes each replica on a random port of the node (`NANOFLOW_PUBLISH_MODE=host`,
//! `NANOFLOW_PORT=0`) and the test spreads its requests over them itself.
#![allow(missing_docs)]

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every document of a YAML file, as JSON (PyYAML, which `.ci/services` relies on too).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{} is not valid YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("{other}"),
    }
}

fn kubernetes() -> Vec<Value> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| yaml_documents(f)).collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no env `{name}` in the runner container"))
}

#[test]
fn the_kubernetes_manifests_run_replicas_on_the_shared_journal() {
    let docs = kubernetes();
    for d in &docs {
        assert!(d["apiVersion"].is_string() && d["kind"].is_string(), "{d}");
        assert!(d["metadata"]["name"].is_string(), "{d}");
    }
    let [deployment] = of_kind(&docs, "Deployment")[..] else {
        panic!("one Deployment")
    };
    let [secret] = of_kind(&docs, "Secret")[..] else {
        panic!("one Secret")
    };
    let [service] = of_kind(&docs, "Service")[..] else {
        panic!("one Service")
    };
    let [pdb] = of_kind(&docs, "PodDisruptionBudget")[..] else {
        panic!("one PodDisruptionBudget")
    };
    assert_eq!(deployment["apiVersion"], "apps/v1");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    let spec = &deployment["spec"];
    assert!(spec["replicas"].as_u64().unwrap() >= 2, "several replicas");
    let labels = &spec["template"]["metadata"]["labels"];
    for (key, value) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[key], value, "the selector matches the pods");
        assert_eq!(
            &service["spec"]["selector"][key], value,
            "the Service selects the pods"
        );
        assert_eq!(
            &pdb["spec"]["selector"]["matchLabels"][key], value,
            "the PDB selects the pods"
        );
    }
    let pod = &spec["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    let runner = &containers[0];
    assert_eq!(runner["args"], serde_json::json!(["serve"]));
    let port = runner["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(port, 8080);
    // Ready only when the journal writes (and every trigger's service is there); alive while
    // the process answers at all.
    assert_eq!(runner["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(runner["readinessProbe"]["httpGet"]["port"], port);
    assert_eq!(runner["livenessProbe"]["httpGet"]["path"], "/healthz");
    // The database URL and the admin token come from the Secret, by name and key.
    let secret_name = &secret["metadata"]["name"];
    let keys: Vec<&String> = secret["stringData"]
        .as_object()
        .or_else(|| secret["data"].as_object())
        .unwrap()
        .keys()
        .collect();
    for var in ["NANOFLOW_JOURNAL", "NANOFLOW_ADMIN_TOKEN"] {
        let from = &env(runner, var)["valueFrom"]["secretKeyRef"];
        assert_eq!(&from["name"], secret_name, "{var} comes from the Secret");
        assert!(
            keys.iter().any(|k| from["key"] == k.as_str()),
            "{var}: the Secret has key {}",
            from["key"]
        );
    }
    let url = secret["stringData"]["journal-url"].as_str().unwrap();
    assert!(
        url.starts_with("postgres://"),
        "the journal is PostgreSQL: {url}"
    );
    // One runner id per pod; the address every probe and the Service reach.
    assert_eq!(
        env(runner, "NANOFLOW_RUNNER_ID")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(env(runner, "NANOFLOW_ADDR")["value"], "0.0.0.0:8080");
    // A rolling update or a drain waits for in-flight runs: longer than the runner's grace.
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 30);
    let security = &runner["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    // The Service sends traffic to that port; the budget keeps at least one replica.
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port);
    let min = pdb["spec"]["minAvailable"].as_u64();
    let max = pdb["spec"]["maxUnavailable"].as_u64();
    assert!(
        min.is_some_and(|m| m >= 1) || max.is_some_and(|m| m >= 1),
        "the budget allows a drain and keeps a replica: {pdb}"
    );
}

#[test]
fn the_compose_file_describes_postgres_and_runner_replicas() {
    let [compose] = &yaml_documents(&repo().join("deploy/compose.yaml"))[..] else {
        panic!("one document")
    };
    let runner = &compose["services"]["runner"];
    let postgres = &compose["services"]["postgres"];
    assert!(postgres.is_object() && runner.is_object());
    let env = &runner["environment"];
    assert!(env["NANOFLOW_JOURNAL"]
        .as_str()
        .unwrap()
        .starts_with("postgres://"));
    assert!(env["NANOFLOW_RUNNER_ID"]
        .as_str()
        .unwrap()
        .contains("{{.Task.Slot}}"));
    assert_eq!(runner["ports"][0]["target"], 8080);
    assert!(runner["deploy"]["replicas"].is_string() || runner["deploy"]["replicas"].is_u64());
    assert_eq!(
        runner["networks"], postgres["networks"],
        "one network for the journal"
    );
}

// ---- the stack, for real ----

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Everything the stack test made, removed whatever happens.
struct Stack {
    name: String,
    secret: String,
    images: Vec<String>,
    left_swarm: bool,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = docker(&["stack", "rm", &self.name]);
        // Containers go away asynchronously; the volume and the secret only after them.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let left = docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=com.docker.stack.namespace={}", self.name),
            ])
            .unwrap_or_default();
            if left.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = docker(&["volume", "rm", &format!("{}_journal", self.name)]);
        let _ = docker(&["secret", "rm", &self.secret]);
        for image in &self.images {
            let _ = docker(&["image", "rm", image]);
        }
        if self.left_swarm {
            let _ = docker(&["swarm", "leave", "--force"]);
        }
    }
}

/// Where a replica's container publishes its port 8080 on the node, once it does; `None` while
/// it does not (starting, or gone: a replica that started before PostgreSQL accepted
/// connections exits and Swarm starts another).
fn published(container: &str) -> Option<std::net::SocketAddr> {
    let port = docker(&[
        "inspect",
        "--format",
        "{{(index (index .NetworkSettings.Ports \"8080/tcp\") 0).HostPort}}",
        container,
    ])
    .unwrap_or_default();
    let port = port.trim().parse::<u16>().ok()?;
    Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

async fn get(addr: std::net::SocketAddr, path: &str, token: &str) -> Option<support::Response> {
    let bearer = format!("Bearer {token}");
    let call = tokio::spawn({
        let path = path.to_owned();
        async move { support::get_with(addr, &path, &[("authorization", &bearer)]).await }
    });
    tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .ok()?
        .ok()
}

async fn send(addr: std::net::SocketAddr, id: &str) -> Option<String> {
    let body = format!(r#"{{"id":"{id}"}}"#);
    let id = id.to_owned();
    let call = tokio::spawn(async move {
        support::request(
            addr,
            "POST",
            "/shipments",
            &[
                ("content-type", "application/json"),
                ("prefer", "respond-async"),
                ("idempotency-key", &id),
            ],
            body.as_bytes(),
        )
        .await
    });
    let r = tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .ok()?
        .ok()?;
    (r.status == 202).then(|| r.json()["run_id"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_runs_replicas_that_share_runs_and_survive_losing_one() {
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must start Docker Engine: {e}"
        );
        eprintln!("\n!!! SKIPPED: no Docker Engine ({e}).\n");
        return;
    }
    let suffix = format!("{:x}", support::random(1 << 40));
    let runner_image = format!("nanoflow/scale:swarm-{suffix}");
    let postgres_image = format!("nanoflow-test/postgres:15-{suffix}");
    let left_swarm = docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]) == "inactive";
    let mut stack = Stack {
        name: format!("nf{suffix}"),
        secret: format!("nf{suffix}_db_password"),
        images: Vec::new(),
        left_swarm: false,
    };
    if left_swarm {
        docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        stack.left_swarm = true;
    }
    let built = Command::new("sh")
        .arg(repo().join("tests/fixtures/swarm/images.sh"))
        .arg(support::example_binary("scale"))
        .args([&runner_image, &postgres_image])
        .output()
        .unwrap();
    stack.images = vec![runner_image.clone(), postgres_image.clone()];
    assert!(
        built.status.success(),
        "building the images: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let password = format!("pw{suffix}");
    let mut create = Command::new("docker")
        .args(["secret", "create", &stack.secret, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    create
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    assert!(create.wait().unwrap().success());

    let token = format!("swarm-test-token-{suffix}");
    let deployed = Command::new("docker")
        .args(["stack", "deploy", "--resolve-image", "never", "-c"])
        .arg(repo().join("deploy/compose.yaml"))
        .arg(&stack.name)
        .env("NANOFLOW_RUNNER_IMAGE", &runner_image)
        .env("NANOFLOW_POSTGRES_IMAGE", &postgres_image)
        .env("NANOFLOW_DB_PASSWORD", &password)
        .env("NANOFLOW_DB_SECRET", &stack.secret)
        .env("NANOFLOW_ADMIN_TOKEN", &token)
        .env("NANOFLOW_PORT", "0")
        .env("NANOFLOW_PUBLISH_MODE", "host")
        .env("NANOFLOW_REPLICAS", "3")
        .env("NANOFLOW_LEASE", "3s")
        .output()
        .unwrap();
    assert!(
        deployed.status.success(),
        "docker stack deploy: {}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    let service = format!("{}_runner", stack.name);
    let running = |want: usize| {
        let service = service.clone();
        async move {
            let ids = docker(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.swarm.service.name={service}"),
            ])
            .unwrap_or_default();
            let ids: Vec<String> = ids.lines().map(str::to_owned).collect();
            (ids.len() == want).then_some(ids)
        }
    };
    // Three running replicas that publish their port and answer ready once they reach the
    // database. PostgreSQL initialises first: a replica that started before it could be
    // reached exits and Swarm starts another, so the set is picked again until it holds.
    let overall = Instant::now() + Duration::from_secs(180);
    let (replicas, addrs) = loop {
        let picked = tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                if let Some(ids) = running(3).await {
                    let addrs: Option<Vec<std::net::SocketAddr>> =
                        ids.iter().map(|c| published(c)).collect();
                    if let Some(addrs) = addrs {
                        return (ids, addrs);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "three replicas never ran: {}",
                docker(&["service", "ps", "--no-trunc", &service]).unwrap_or_default()
            )
        });
        let ready_by = Instant::now() + Duration::from_secs(30);
        let mut all_ready = true;
        for addr in &picked.1 {
            loop {
                if let Some(r) = get(*addr, "/readyz", &token).await {
                    if r.status == 200 {
                        break;
                    }
                }
                if Instant::now() > ready_by {
                    all_ready = false;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        if all_ready {
            break picked;
        }
        assert!(
            Instant::now() < overall,
            "the stack never became ready: {}",
            docker(&["service", "logs", "--tail", "20", &service]).unwrap_or_default()
        );
    };

    // Runs spread over the replicas; replica 0 is killed (SIGKILL) after the 15th: Swarm
    // replaces it, the others take its runs over.
    let mut acked = Vec::new();
    let mut killed = false;
    for i in 0..30 {
        let id = format!("swarm-{i}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut target = i % 3;
        loop {
            if killed && target == 0 {
                target = 1;
            }
            if let Some(run_id) = send(addrs[target], &id).await {
                acked.push((id, run_id, target));
                break;
            }
            assert!(Instant::now() < deadline, "run {id} was never accepted");
            target = (target + 1) % 3;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if i == 15 {
            docker_ok(&["kill", &replicas[0]]);
            killed = true;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    for (id, run_id, accepted_by) in &acked {
        // Asked of another replica than the one that accepted it (and never of the dead one).
        let asked = addrs[if *accepted_by == 1 { 2 } else { 1 }];
        loop {
            if let Some(r) = get(asked, &format!("/runs/{run_id}"), &token).await {
                if r.status == 200 && r.json()["status"] == "succeeded" {
                    assert_eq!(r.json()["output"], format!("shipped {id}"));
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "run {id} ({run_id}) never finished"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let listed = get(addrs[2], "/runs?workflow=shipment&limit=100", &token)
        .await
        .expect("the run list");
    assert_eq!(listed.json()["runs"].as_array().unwrap().len(), 30);
    // Swarm brought the killed replica back.
    tokio::time::timeout(Duration::from_secs(60), async {
        while running(3).await.is_none() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .expect("Swarm did not replace the killed replica");
    eprintln!("swarm stack: 3 replicas, one killed mid-load, 30 runs finished");
    drop(stack);
}
