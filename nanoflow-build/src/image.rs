//! What goes into the runner image and a node image: the binary, the exact shared libraries it
//! loads (from `ldd`), and a Dockerfile `FROM scratch`. The tag is a hash of the whole build
//! context, so an image whose content did not change keeps its tag and is not rebuilt.

use std::collections::BTreeMap;
use std::hash::Hasher as _;
use std::path::{Path, PathBuf};

use crate::tar::Tar;

/// Where the node entrypoint lives inside a node image.
pub(crate) const NODE_BINARY: &str = "nanoflow/node";
/// Where the service binary lives inside the runner image.
pub(crate) const RUNNER_BINARY: &str = "nanoflow/runner";

/// A binary and its shared libraries, as (path inside the image, content) pairs.
#[derive(Debug)]
pub(crate) struct Payload {
    files: Vec<(String, Vec<u8>)>,
}

impl Payload {
    /// Reads `binary` (to be placed at `inside`) and the libraries it loads.
    pub(crate) fn read(binary: &Path, inside: &str) -> Result<Self, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
        let mut files = vec![(inside.to_owned(), read(binary)?)];
        for lib in shared_libraries(binary)? {
            let inside = lib.to_string_lossy().trim_start_matches('/').to_owned();
            files.push((inside, read(&lib)?));
        }
        Ok(Self { files })
    }
}

/// The shared libraries `binary` loads, as absolute paths (none for a static binary).
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("running `ldd` to find the binary's shared libraries: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// An image to build: its tag and its build context (a tar with the Dockerfile).
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) tag: String,
    pub(crate) tar: Vec<u8>,
}

/// Lowercase letters, digits, `-` and `.`: what an image name component may hold.
pub(crate) fn clean(name: &str) -> String {
    name.to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The runner image: the service binary serving its triggers, the journal on the `/data` volume.
pub(crate) fn runner(service: &str, payload: &Payload) -> Context {
    let mut labels = BTreeMap::new();
    labels.insert("nanoflow.service", service.to_owned());
    labels.insert("nanoflow.role", "runner".to_owned());
    labels.insert("nanoflow.version", env!("CARGO_PKG_VERSION").to_owned());
    // COPY makes everything root's; the journal's directory belongs to the runner's user.
    let mut dockerfile =
        String::from("FROM scratch\nCOPY rootfs/ /\nCOPY --chown=65534:65534 data/ /data/\n");
    dockerfile.push_str(&label_lines(&labels));
    dockerfile.push_str(
        "ENV NANOFLOW_ADDR=0.0.0.0:8080 NANOFLOW_JOURNAL=/data/journal.db\n\
         VOLUME [\"/data\"]\nEXPOSE 8080\nUSER 65534:65534\n",
    );
    dockerfile.push_str(&format!(
        "ENTRYPOINT [\"/{RUNNER_BINARY}\"]\nCMD [\"serve\"]\n"
    ));
    let mut tar = Tar::default();
    tar.file("Dockerfile", dockerfile.as_bytes(), 0o644);
    tar.dir("data/", 0o755);
    tar.dir("rootfs/tmp/", 0o1777);
    add_payload(&mut tar, payload);
    finish(format!("nanoflow/{}", clean(service)), tar)
}

/// A node image: the node entrypoint serving `node` on the container protocol.
pub(crate) fn node(service: &str, node: &Node, payload: &Payload) -> Context {
    let mut labels = BTreeMap::new();
    labels.insert("nanoflow.service", service.to_owned());
    labels.insert("nanoflow.role", "node".to_owned());
    labels.insert("nanoflow.node", node.name.clone());
    labels.insert("nanoflow.input_type", node.input_type.clone());
    labels.insert("nanoflow.output_type", node.output_type.clone());
    labels.insert("nanoflow.version", env!("CARGO_PKG_VERSION").to_owned());
    let mut dockerfile = String::from("FROM scratch\nCOPY rootfs/ /\n");
    dockerfile.push_str(&label_lines(&labels));
    // The runner's pool bind-mounts a directory at /run/nanoflow and connects to the socket
    // there (the same contract as `images build`).
    dockerfile.push_str(&format!(
        "ENV NANOFLOW_NODE_SERVE={} NANOFLOW_NODE_SOCKET=/run/nanoflow/node.sock\n\
         USER 65534:65534\nENTRYPOINT [\"/{NODE_BINARY}\"]\n",
        node.name
    ));
    let mut tar = Tar::default();
    tar.file("Dockerfile", dockerfile.as_bytes(), 0o644);
    tar.dir("rootfs/run/nanoflow/", 0o755);
    add_payload(&mut tar, payload);
    finish(
        format!("nanoflow/{}-{}", clean(service), clean(&node.name)),
        tar,
    )
}

/// A node as the node entrypoint lists it (`<binary> nodes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) input_type: String,
    pub(crate) output_type: String,
}

impl Node {
    /// Parses the JSON lines `<node binary> nodes` prints.
    pub(crate) fn parse_list(text: &str) -> Result<Vec<Node>, String> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| format!("the node list is not JSON lines ({e}): {line}"))?;
                let field = |k: &str| v[k].as_str().map(str::to_owned);
                match (field("node"), field("input_type"), field("output_type")) {
                    (Some(name), Some(input_type), Some(output_type)) => Ok(Node {
                        name,
                        input_type,
                        output_type,
                    }),
                    _ => Err(format!("a node list entry lacks a field: {line}")),
                }
            })
            .collect()
    }
}

fn label_lines(labels: &BTreeMap<&str, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("LABEL {k}={}\n", serde_json::Value::from(v.as_str())))
        .collect()
}

fn add_payload(tar: &mut Tar, payload: &Payload) {
    for (path, content) in &payload.files {
        tar.file(&format!("rootfs/{path}"), content, 0o755);
    }
}

fn finish(name: String, tar: Tar) -> Context {
    let tar = tar.finish();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(&tar);
    Context {
        tag: format!("{name}:{:016x}", hasher.finish()),
        tar,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(content: &[u8]) -> Payload {
        Payload {
            files: vec![(NODE_BINARY.to_owned(), content.to_vec())],
        }
    }

    fn price() -> Node {
        Node {
            name: "price".into(),
            input_type: "Order".into(),
            output_type: "Priced".into(),
        }
    }

    #[test]
    fn tags_follow_the_content() {
        let a = node("Shop_Svc", &price(), &payload(b"one"));
        let again = node("Shop_Svc", &price(), &payload(b"one"));
        let b = node("Shop_Svc", &price(), &payload(b"two"));
        assert!(a.tag.starts_with("nanoflow/shop-svc-price:"), "{}", a.tag);
        assert_eq!(a.tag, again.tag);
        assert_ne!(a.tag, b.tag);
        let r = runner("Shop_Svc", &payload(b"one"));
        assert!(r.tag.starts_with("nanoflow/shop-svc:"), "{}", r.tag);
    }

    #[test]
    fn node_lists_are_parsed_and_checked() {
        let text = "{\"node\":\"price\",\"input_type\":\"Order\",\"output_type\":\"Priced\"}\n\n";
        assert_eq!(Node::parse_list(text).unwrap(), vec![price()]);
        assert!(Node::parse_list("{\"node\":\"price\"}").is_err());
        assert!(Node::parse_list("error: unexpected argument").is_err());
    }

    #[test]
    fn a_dynamic_binary_brings_its_libraries() {
        let exe = std::env::current_exe().unwrap();
        let p = Payload::read(&exe, NODE_BINARY).unwrap();
        assert_eq!(p.files[0].0, NODE_BINARY);
        assert!(
            p.files.iter().any(|(path, _)| path.contains("libc.so")),
            "{:?}",
            p.files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
    }
}
